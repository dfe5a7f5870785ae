/**
 * The variable the primary sets in the processes it forks, so main.ts starts them as workers
 * (and a gateway run as some other cluster's worker, e.g. by a process manager, stays a command).
 *
 * @since 0.1.0
 */
export const WORKER_ENV = "AGENTGATEWAY_CLUSTER_WORKER"
