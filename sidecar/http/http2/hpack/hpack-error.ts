/** A header block that cannot be decoded: the connection's compression state is lost (COMPRESSION_ERROR). */
export class HpackError extends Error {
  override readonly name = "HpackError";
}
