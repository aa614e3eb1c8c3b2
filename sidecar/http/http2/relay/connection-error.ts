import type { Frame } from "../frames/frame-reader.ts";
import { ErrorCode, unpaddedPayload } from "../frames/frame.ts";

/** A connection-level failure: the code and the reason its GOAWAY carries. */
export class ConnectionError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** A DATA or HEADERS payload without its padding, after `skip` octets of priority fields. */
export function unpad(f: Frame, skip: number): Buffer {
  const payload = unpaddedPayload(f.flags, f.payload, skip);
  if (payload === undefined)
    throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame");
  return payload;
}
