import type { Frame } from "../frames/frame-reader.ts";
import { ErrorCode, Flag, FrameType } from "../frames/frame.ts";
import { ConnectionError } from "./connection-error.ts";

const NAMES: Record<number, string> = {
  [FrameType.DATA]: "DATA",
  [FrameType.HEADERS]: "HEADERS",
  [FrameType.PRIORITY]: "PRIORITY",
  [FrameType.RST_STREAM]: "RST_STREAM",
  [FrameType.SETTINGS]: "SETTINGS",
  [FrameType.PING]: "PING",
  [FrameType.GOAWAY]: "GOAWAY",
  [FrameType.CONTINUATION]: "CONTINUATION",
};

/** Frames that belong to a stream, never to stream 0. */
const ON_A_STREAM = new Set<number>([
  FrameType.DATA,
  FrameType.HEADERS,
  FrameType.PRIORITY,
  FrameType.RST_STREAM,
  FrameType.CONTINUATION,
]);

/** Frames that belong to the connection, only ever on stream 0. */
const ON_THE_CONNECTION = new Set<number>([FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY]);

/** Payload sizes fixed by RFC 9113 §6, where a wrong size is a connection error. */
const EXACT_SIZE: Record<number, number> = {
  [FrameType.RST_STREAM]: 4,
  [FrameType.PING]: 8,
  [FrameType.WINDOW_UPDATE]: 4,
};

/**
 * The checks RFC 9113 §6 makes of a frame by its type alone: which stream it may name and how long
 * its payload is. A frame that fails them is a connection error, whatever state its stream is in.
 */
export function checkFrameShape(f: Frame): void {
  const name = NAMES[f.type];
  if (f.streamId === 0 && ON_A_STREAM.has(f.type))
    throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `${name} on stream 0`);
  if (f.streamId !== 0 && ON_THE_CONNECTION.has(f.type))
    throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `${name} on a stream`);
  const size = EXACT_SIZE[f.type];
  if (size !== undefined && f.payload.length !== size)
    throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, `${name ?? "WINDOW_UPDATE"} not of ${size} octets`);
  if (f.type === FrameType.GOAWAY && f.payload.length < 8)
    throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets");
  if (f.type === FrameType.SETTINGS && (f.flags & Flag.ACK) !== 0 && f.payload.length !== 0)
    throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload");
}
