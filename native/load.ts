/**
 * Loads the native addon once per process: the one built from source here (native/build/Release,
 * by node-gyp on `npm ci`), else the one prebuilt for this platform that a packed Sigil ships
 * (native/prebuilds/<platform>-<arch>/). A failure is kept and thrown again as the same typed error.
 */
import { createRequire } from "node:module";
import type { NativeBinding } from "./addon.ts";

/** The addon could not be loaded (not built, or built for another Node ABI). */
export class NativeUnavailableError extends Error {
  override readonly name = "NativeUnavailableError";
}

let binding: NativeBinding | null = null;
let loadError: Error | null = null;

/** The addon, loaded on first use; `NativeUnavailableError` (the same one each time) when it cannot be. */
export function load(): NativeBinding {
  if (binding) return binding;
  if (loadError) throw loadError;
  const require = createRequire(import.meta.url);
  const platform = `${process.platform}-${process.arch}`;
  const failures: string[] = [];
  for (const path of ["./build/Release/sigil_native.node", `./prebuilds/${platform}/sigil_native.node`]) {
    try {
      binding = require(path) as NativeBinding;
      return binding;
    } catch (err) {
      failures.push(`${path}: ${(err as Error).message.split("\n")[0]}`);
    }
  }
  loadError = new NativeUnavailableError(
    `native addon not loadable for ${platform} (build it with \`npm ci\` or \`node-gyp rebuild --directory native\`; ` +
      `the linux-x64 prebuilt needs libnetfilter-queue1 and libmnl0): ${failures.join("; ")}`,
  );
  throw loadError;
}

/** True when the addon is built and loadable in this process. */
export function nativeAvailable(): boolean {
  try {
    load();
    return true;
  } catch {
    return false;
  }
}
