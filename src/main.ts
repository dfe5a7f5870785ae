#!/usr/bin/env node
/**
 * The process entry point, `node dist/main.js`: the `agentgateway` command (Cli.ts), or, in a
 * process the cluster primary forked, a worker (cluster/Worker.ts). A worker runs this same
 * file, so one self-contained build of it (scripts/bundle.ts) serves both. Before either loads,
 * a process started without `MALLOC_ARENA_MAX` re-executes itself with it (shared/MallocArenas.ts).
 *
 * @since 0.1.0
 */
import cluster from "node:cluster"
import { WORKER_ENV } from "./cluster/WorkerEnv.ts"
import { limitMallocArenas } from "./shared/MallocArenas.ts"

limitMallocArenas()
if (cluster.isWorker && process.env[WORKER_ENV] === "1") (await import("./cluster/Worker.ts")).run()
else await import("./Cli.ts")
