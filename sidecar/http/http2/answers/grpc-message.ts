/**
 * The value of a `grpc-message` trailer as the gRPC over HTTP/2 protocol defines it: printable
 * ASCII other than `%` goes as is, every other byte of the UTF-8 text as `%XX`. Clients decode only
 * those escapes, so `encodeURIComponent` (which also escapes `:`, `/`, spaces) would reach users as
 * `permission denied%3A …`.
 */
export function encodeGrpcMessage(text: string): string {
  let out = "";
  for (const byte of Buffer.from(text, "utf8")) {
    out +=
      byte >= 0x20 && byte <= 0x7e && byte !== 0x25
        ? String.fromCharCode(byte)
        : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}
