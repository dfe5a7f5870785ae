/**
 * The entry point of a cluster worker process (the primary forks it: cluster/Primary.ts).
 *
 * @since 0.1.0
 */
import * as Worker from "./Worker.ts"

Worker.run()
