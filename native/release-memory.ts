import { load } from "./load.ts";

/**
 * Hands the C heap's free pages back to the kernel (glibc `malloc_trim`). Returns false where the C
 * library has no such call, or the loaded addon was built before it had this function; throws
 * `NativeUnavailableError` when the addon is not loadable at all.
 */
export function releaseFreeMemory(): boolean {
  const binding = load();
  return binding.releaseFreeMemory === undefined ? false : binding.releaseFreeMemory();
}
