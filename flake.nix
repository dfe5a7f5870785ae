{
  description = "effect-agentgateway: an agentgateway-compatible AI connectivity data plane on Effect and Node 24";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # package-lock.json is written without `resolved` URLs (npm's
      # omit-lockfile-registry-resolved), and importNpmLock fetches what they name: every
      # registry package gets its tarball's URL back from npm's registry layout
      # (<name>/-/<name without scope>-<version>.tgz). test/Flake.test.ts evaluates this.
      lib.lockWithUrls = lock: lock // {
        packages = builtins.mapAttrs (path: entry:
          if path == "" || entry ? resolved || entry ? link || entry ? inBundle || !(entry ? version) then entry
          else
            let
              name = entry.name or (builtins.head (builtins.match ".*node_modules/(.+)" path));
              base = builtins.elemAt (builtins.match "(@[^/]+/)?(.+)" name) 1;
            in entry // { resolved = "https://registry.npmjs.org/${name}/-/${base}-${entry.version}.tgz"; })
          lock.packages;
      };

      packages = forAllSystems (pkgs:
        let nodejs = pkgs.nodejs_24; in {
          default = pkgs.buildNpmPackage {
            pname = "effect-agentgateway";
            version = (builtins.fromJSON (builtins.readFile ./package.json)).version;
            src = ./.;
            inherit nodejs;
            # Each package is fetched on its own with the integrity hash package-lock.json
            # records, so no hash of the whole closure has to be kept in step with the lock.
            npmDeps = pkgs.importNpmLock {
              npmRoot = ./.;
              packageLock = self.lib.lockWithUrls (builtins.fromJSON (builtins.readFile ./package-lock.json));
            };
            npmConfigHook = pkgs.importNpmLock.npmConfigHook;
            # The `node` devDependency downloads a Node binary in preinstall; nixpkgs' nodejs_24
            # is used instead, so install scripts are skipped.
            npmFlags = [ "--ignore-scripts" ];
            npmBuildScript = "build";
            nativeBuildInputs = [ pkgs.makeWrapper ];
            postInstall = ''
              # --max-semi-space-size=4 and MALLOC_ARENA_MAX=2 (unless set): as the container image
              # (README, Operating > Memory).
              makeWrapper ${nodejs}/bin/node $out/bin/agentgateway \
                --set-default MALLOC_ARENA_MAX 2 \
                --add-flags "--max-semi-space-size=4 $out/lib/node_modules/effect-agentgateway/dist/main.js"
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
