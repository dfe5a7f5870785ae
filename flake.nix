{
  description = "effect-agentgateway: an agentgateway-compatible AI connectivity data plane on Effect and Node 24";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs:
        let nodejs = pkgs.nodejs_24; in {
          default = pkgs.buildNpmPackage {
            pname = "effect-agentgateway";
            version = (builtins.fromJSON (builtins.readFile ./package.json)).version;
            src = ./.;
            inherit nodejs;
            # Hash of the npm dependency closure. It cannot be computed offline; after changing
            # package-lock.json run `nix build` once and paste the hash it reports here.
            npmDepsHash = pkgs.lib.fakeHash;
            # The `node` devDependency downloads a Node binary in preinstall; nixpkgs' nodejs_24
            # is used instead, so install scripts are skipped.
            npmFlags = [ "--ignore-scripts" ];
            npmBuildScript = "build";
            nativeBuildInputs = [ pkgs.makeWrapper ];
            postInstall = ''
              makeWrapper ${nodejs}/bin/node $out/bin/agentgateway \
                --add-flags $out/lib/node_modules/effect-agentgateway/dist/main.js
            '';
            meta = {
              description = "AI connectivity data plane (LLM, MCP, A2A gateway) compatible with agentgateway's config";
              license = pkgs.lib.licenses.asl20;
              mainProgram = "agentgateway";
            };
          };
        });

      apps = forAllSystems (pkgs:
        let
          pkg = self.packages.${pkgs.system}.default;
          # `nix run` with no arguments serves the shipped quickstart config.
          run = pkgs.writeShellScript "agentgateway-run" ''
            if [ "$#" -eq 0 ]; then
              exec ${pkg}/bin/agentgateway -f ${pkg}/lib/node_modules/effect-agentgateway/examples/quickstart.yaml
            fi
            exec ${pkg}/bin/agentgateway "$@"
          '';
        in {
          default = { type = "app"; program = "${run}"; };
        });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell { packages = [ pkgs.nodejs_24 pkgs.git ]; };
      });
    };
}
