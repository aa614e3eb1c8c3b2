// The package's install step: a prebuilt native addon for this platform (native/prebuilds/, put
// there by `npm pack`) is used as it is; otherwise the addon is built from source with node-gyp.
// The addon is Linux-only (SO_ORIGINAL_DST, SO_PEERCRED, NFQUEUE): elsewhere nothing is built and
// only the commands that need it (the sidecar, capture) refuse to run.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const platform = `${process.platform}-${process.arch}`;
const prebuilt = fileURLToPath(new URL(`../native/prebuilds/${platform}/sigil_native.node`, import.meta.url));

if (existsSync(prebuilt)) {
  process.exit(0);
}
if (process.platform !== "linux") {
  console.warn(`sigil: no native addon for ${platform} (it is Linux-only); the sidecar will not run here`);
  process.exit(0);
}
const gyp = process.env.npm_config_node_gyp;
const result = gyp
  ? spawnSync(process.execPath, [gyp, "rebuild", "--directory", "native"], { stdio: "inherit" })
  : spawnSync("node-gyp", ["rebuild", "--directory", "native"], { stdio: "inherit" });
if (result.status !== 0) {
  console.error(
    `sigil: no prebuilt native addon fits ${platform} and building it from source failed; ` +
      "it needs a C++ compiler, make and python3 (libnetfilter-queue-dev and libmnl-dev for the fast path)",
  );
  process.exit(result.status ?? 1);
}
