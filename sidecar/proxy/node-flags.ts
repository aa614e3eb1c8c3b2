/**
 * The Node and V8 flags of a sidecar process wherever Sigil starts one: the injected pod's command
 * (`inject/containers.ts`) and bench/compare's pairs, so the figures measured are those of the
 * sidecar that ships (bench/compare/MEMORY.md has the measurements behind each):
 *
 * - a 1 MB semi-space keeps V8's young generation from growing to 2 × 16 MB during start-up and
 *   under load: about 30 MB less resident per sidecar, and many short scavenges instead of a few
 *   of 20–95 ms, which the fixed-rate tail pays;
 * - single-threaded GC: a sidecar shares its cores with its workload, and a scavenge that waits for
 *   preempted helper threads took longer in total than one done on the main thread alone.
 *
 * They go on the command line: Node refuses `--single-threaded-gc` in NODE_OPTIONS. Worker
 * processes (`../worker-processes/`) inherit them, as cluster forks take the primary's flags.
 */
export const SIDECAR_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1", "--single-threaded-gc"];
