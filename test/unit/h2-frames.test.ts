import { describe, expect, it } from "vitest";
import type { Frame } from "../../sidecar/http/http2/frames/frame-reader.ts";
import { FrameReader } from "../../sidecar/http/http2/frames/frame-reader.ts";
import {
  ErrorCode,
  Flag,
  FrameType,
  PREFACE,
  Setting,
  frame,
  headerFrames,
  settingsFrame,
} from "../../sidecar/http/http2/frames/frame.ts";
import { ConnectionError } from "../../sidecar/http/http2/relay/connection-error.ts";
import { FloodGuard } from "../../sidecar/http/http2/relay/flood-guard.ts";
import { checkFrameShape } from "../../sidecar/http/http2/relay/frame-shape.ts";
import { HeaderBlockAssembler } from "../../sidecar/http/http2/relay/header-block.ts";
import { PeerSettings } from "../../sidecar/http/http2/relay/peer-settings.ts";

function readAll(reader: FrameReader, chunks: Buffer[]): { frames: Frame[]; error: string | undefined } {
  const frames: Frame[] = [];
  for (const chunk of chunks) {
    const error = reader.push(chunk, (f) => {
      frames.push({ ...f, payload: Buffer.from(f.payload) });
    });
    if (error) return { frames, error: error.code };
  }
  return { frames, error: undefined };
}

function connectionError(run: () => void): { code: number; message: string } | undefined {
  try {
    run();
    return undefined;
  } catch (err) {
    if (err instanceof ConnectionError) return { code: err.code, message: err.message };
    throw err;
  }
}

describe("FrameReader", () => {
  const bytes = Buffer.concat([
    PREFACE,
    settingsFrame([[Setting.MAX_CONCURRENT_STREAMS, 10]]),
    frame(FrameType.DATA, Flag.END_STREAM, 1, Buffer.from("hello")),
    frame(FrameType.PING, 0, 0, Buffer.alloc(8, 7)),
  ]);

  it("yields the same frames however the bytes are cut", () => {
    const whole = readAll(new FrameReader(16_384, true), [bytes]);
    expect(whole.error).toBeUndefined();
    expect(whole.frames.map((f) => f.type)).toEqual([FrameType.SETTINGS, FrameType.DATA, FrameType.PING]);
    for (let cut = 1; cut < bytes.length; cut++) {
      const split = readAll(new FrameReader(16_384, true), [bytes.subarray(0, cut), bytes.subarray(cut)]);
      expect(split).toEqual(whole);
    }
    const byteByByte = readAll(
      new FrameReader(16_384, true),
      [...bytes].map((b) => Buffer.from([b])),
    );
    expect(byteByByte).toEqual(whole);
  });

  it("refuses a connection that does not start with the preface, even one octet at a time", () => {
    const reader = new FrameReader(16_384, true);
    expect(reader.push(Buffer.from("PRI * HTTP/2.0\r\n"), () => undefined)).toBeUndefined();
    expect(reader.push(Buffer.from("\r\nXX"), () => undefined)?.code).toBe("preface");
    expect(readAll(new FrameReader(16_384, true), [Buffer.from("GET / HTTP/1.1\r\n\r\n")]).error).toBe(
      "preface",
    );
  });

  it("refuses a frame above the size it allows from its header alone", () => {
    const header = frame(FrameType.DATA, 0, 1, Buffer.alloc(16_385)).subarray(0, 9);
    expect(readAll(new FrameReader(16_384, false), [header]).error).toBe("frame size");
  });

  it("stops at a frame whose handler says the connection is ending", () => {
    const reader = new FrameReader(16_384, true);
    const seen: number[] = [];
    reader.push(bytes, (f) => {
      seen.push(f.type);
      return false;
    });
    expect(seen).toEqual([FrameType.SETTINGS]);
  });
});

describe("checkFrameShape", () => {
  const cases: [string, Frame, number | undefined][] = [
    [
      "DATA on stream 0",
      { type: FrameType.DATA, flags: 0, streamId: 0, payload: Buffer.alloc(0) },
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "SETTINGS on a stream",
      { type: FrameType.SETTINGS, flags: 0, streamId: 1, payload: Buffer.alloc(0) },
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "PING of 7 octets",
      { type: FrameType.PING, flags: 0, streamId: 0, payload: Buffer.alloc(7) },
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "RST_STREAM of 5 octets",
      { type: FrameType.RST_STREAM, flags: 0, streamId: 1, payload: Buffer.alloc(5) },
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "WINDOW_UPDATE of 3 octets",
      { type: FrameType.WINDOW_UPDATE, flags: 0, streamId: 0, payload: Buffer.alloc(3) },
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "GOAWAY of 7 octets",
      { type: FrameType.GOAWAY, flags: 0, streamId: 0, payload: Buffer.alloc(7) },
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "SETTINGS ACK with a payload",
      { type: FrameType.SETTINGS, flags: Flag.ACK, streamId: 0, payload: Buffer.alloc(6) },
      ErrorCode.FRAME_SIZE_ERROR,
    ],
    [
      "CONTINUATION on stream 0",
      { type: FrameType.CONTINUATION, flags: 0, streamId: 0, payload: Buffer.alloc(0) },
      ErrorCode.PROTOCOL_ERROR,
    ],
    [
      "a well-formed PING",
      { type: FrameType.PING, flags: 0, streamId: 0, payload: Buffer.alloc(8) },
      undefined,
    ],
    [
      "an unknown type on any stream",
      { type: 0xfa, flags: 0xff, streamId: 3, payload: Buffer.alloc(3) },
      undefined,
    ],
  ];
  it.each(cases)("%s", (_name, f, code) => {
    expect(connectionError(() => checkFrameShape(f))?.code).toBe(code);
  });
});

describe("PeerSettings", () => {
  const entries = (...pairs: [number, number][]): Buffer => settingsFrame(pairs).subarray(9);

  it("applies values in order and reports the window change and table size", () => {
    const peer = new PeerSettings();
    const change = peer.apply(
      entries(
        [Setting.INITIAL_WINDOW_SIZE, 1000],
        [Setting.INITIAL_WINDOW_SIZE, 70_000],
        [Setting.HEADER_TABLE_SIZE, 0],
        [Setting.MAX_FRAME_SIZE, 32_768],
        [Setting.MAX_CONCURRENT_STREAMS, 5],
        [0x99, 1],
      ),
    );
    expect(change).toEqual({ windowDelta: 70_000 - 65_535, headerTableSize: 0 });
    expect([peer.maxFrameSize, peer.maxStreams]).toEqual([32_768, 5]);
  });

  it.each([
    ["a window above 2^31 - 1", [Setting.INITIAL_WINDOW_SIZE, 2 ** 31], ErrorCode.FLOW_CONTROL_ERROR],
    ["a frame size below 16,384", [Setting.MAX_FRAME_SIZE, 16_383], ErrorCode.PROTOCOL_ERROR],
    ["a frame size above 2^24 - 1", [Setting.MAX_FRAME_SIZE, 2 ** 24], ErrorCode.PROTOCOL_ERROR],
    ["ENABLE_PUSH 2", [Setting.ENABLE_PUSH, 2], ErrorCode.PROTOCOL_ERROR],
  ] as [string, [number, number], number][])("refuses %s", (_name, pair, code) => {
    expect(connectionError(() => new PeerSettings().apply(entries(pair)))?.code).toBe(code);
  });

  it("refuses a payload not in 6-octet entries", () => {
    expect(connectionError(() => new PeerSettings().apply(Buffer.alloc(7)))?.code).toBe(
      ErrorCode.FRAME_SIZE_ERROR,
    );
  });
});

describe("HeaderBlockAssembler", () => {
  const continuation = (id: number, payload: Buffer, end: boolean): Frame => ({
    type: FrameType.CONTINUATION,
    flags: end ? Flag.END_HEADERS : 0,
    streamId: id,
    payload,
  });

  it("joins HEADERS and CONTINUATION frames, END_STREAM taken from HEADERS", () => {
    const block = new HeaderBlockAssembler(100);
    expect(block.start(1, Flag.END_STREAM, Buffer.from("ab"))).toBeUndefined();
    expect(block.open).toBe(true);
    expect(block.continue(continuation(1, Buffer.from("cd"), false))).toBeUndefined();
    const whole = block.continue(continuation(1, Buffer.from("ef"), true));
    expect(whole && { ...whole, fragment: whole.fragment.toString() }).toEqual({
      id: 1,
      fragment: "abcdef",
      endStream: true,
    });
    expect(block.open).toBe(false);
  });

  it("refuses CONTINUATION for another stream or with no block open", () => {
    const block = new HeaderBlockAssembler(100);
    expect(connectionError(() => block.continue(continuation(1, Buffer.alloc(1), true)))?.code).toBe(
      ErrorCode.PROTOCOL_ERROR,
    );
    block.start(1, 0, Buffer.alloc(1));
    expect(connectionError(() => block.continue(continuation(3, Buffer.alloc(1), true)))?.code).toBe(
      ErrorCode.PROTOCOL_ERROR,
    );
  });

  it("refuses a block once it grows past the bound, before it is whole", () => {
    const block = new HeaderBlockAssembler(10);
    block.start(1, 0, Buffer.alloc(6));
    expect(connectionError(() => block.continue(continuation(1, Buffer.alloc(5), false)))?.code).toBe(
      ErrorCode.ENHANCE_YOUR_CALM,
    );
  });

  it("takes blocks cut the way headerFrames cuts them", () => {
    const fragment = Buffer.alloc(40_000, 0x61);
    const bytes = headerFrames(5, fragment, false, 16_384);
    const frames = readAll(new FrameReader(16_384, false), [bytes]).frames;
    expect(frames.map((f) => f.type)).toEqual([
      FrameType.HEADERS,
      FrameType.CONTINUATION,
      FrameType.CONTINUATION,
    ]);
    const block = new HeaderBlockAssembler(65_536);
    const [first, ...rest] = frames as [Frame, ...Frame[]];
    let whole = block.start(first.streamId, first.flags, first.payload);
    for (const f of rest) whole = block.continue(f);
    expect(whole?.fragment.equals(fragment)).toBe(true);
  });
});

describe("FloodGuard", () => {
  it("allows the burst, then only what the rate has refilled", () => {
    let now = 0;
    const guard = new FloodGuard(3, 10, () => now);
    expect([guard.spend(), guard.spend(), guard.spend(), guard.spend()]).toEqual([true, true, true, false]);
    now += 99;
    expect(guard.spend()).toBe(false);
    now += 1;
    expect([guard.spend(), guard.spend()]).toEqual([true, false]);
    now += 60_000;
    expect([guard.spend(), guard.spend(), guard.spend(), guard.spend()]).toEqual([true, true, true, false]);
  });
});
