/** Names and numbers the injected pod and the sidecar image agree on. */

export const ANNOTATION_PREFIX = "sigil.io/";
export const INJECT_KEY = "sigil.io/inject";
/** Set on every injected pod: the version of the injection, so a reader can tell it was done. */
export const INJECTED_ANNOTATION = "sigil.io/injected";
/**
 * Podman runtime: the application ports, kept here because the injection removes the containers'
 * port declarations (podman 4 `kube play` publishes every declared containerPort on the host).
 */
export const APP_PORTS_ANNOTATION = "sigil.io/app-ports";

export const INIT_CONTAINER = "sigil-init";
export const SIDECAR_CONTAINER = "sigil-sidecar";
/** Volumes the injection owns: re-injection replaces them, an application may not use these names. */
export const VOLUME_PREFIX = "sigil-";

/** The uid (and gid) the sidecar runs as; capture exempts exactly this uid's sockets. */
export const SIDECAR_UID = 1337;
export const INBOUND_PORT = 15006;
export const OUTBOUND_PORT = 15001;
export const ADMIN_PORT = 15000;
export const SIDECAR_PORTS: readonly number[] = [ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT];

/**
 * The fast path's mark field (sidecar/fastpath/marks.ts MARK_MASK; a unit test keeps them equal):
 * capture lets connections the fast path decided bypass the proxy only when it knows the field.
 */
export const FAST_PATH_MARK_MASK = "0xf00000";

/** Paths inside the sidecar image (scripts/build-image.sh). */
export const IMAGE_NODE = "/usr/bin/node";
export const IMAGE_ENTRY = "/opt/sigil/app/sigil.mjs";

/**
 * The Node and V8 flags of the sidecar process, on the injected container's command line and on
 * bench/compare's pairs, so the figures measured are those of the sidecar that ships
 * (bench/compare/MEMORY.md has the measurements behind each):
 *
 * - a 1 MB semi-space keeps V8's young generation from growing to 2 × 16 MB during start-up and
 *   under load: about 30 MB less resident per sidecar, and many short scavenges instead of a few
 *   of 20–95 ms, which the fixed-rate tail pays;
 * - single-threaded GC: a sidecar shares its cores with its workload, and a scavenge that waits for
 *   preempted helper threads took longer in total than one done on the main thread alone.
 *
 * They go on the command line: Node refuses `--single-threaded-gc` in NODE_OPTIONS. The sidecar's
 * worker processes inherit them, as cluster forks take the primary's flags.
 */
export const SIDECAR_NODE_FLAGS: readonly string[] = ["--max-semi-space-size=1", "--single-threaded-gc"];

export const BUNDLE_DIR = "/var/run/sigil/bundle";
export const BUNDLE_FILE = "bundle.pem";
export const TOKEN_DIR = "/var/run/sigil/token";
export const TOKEN_FILE = "token";
/** `sigil.io/user-access-config`'s Secret: `user-access.yaml` and the files it names (client secret, session key). */
export const USER_ACCESS_DIR = "/var/run/sigil/user-access";
export const USER_ACCESS_FILE = "user-access.yaml";

/** Podman runs an init container on every start only with this pod annotation (the default "once" type is not removed cleanly). */
export const PODMAN_INIT_ANNOTATION = "io.podman.annotations.init.container.type";
