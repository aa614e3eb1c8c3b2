/**
 * Orders strings by UTF-16 code units, as `<` does: the same order on every host. `localeCompare`
 * orders by the host's ICU collation, which can differ between Node builds, and its first call maps
 * megabytes of ICU's collation data into every process that makes it, a sidecar included.
 */
export function byCodeUnits(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
