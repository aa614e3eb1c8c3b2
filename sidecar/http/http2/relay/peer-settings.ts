import { DEFAULT_MAX_FRAME_SIZE, DEFAULT_WINDOW, ErrorCode, MAX_WINDOW, Setting } from "../frames/frame.ts";
import { ConnectionError } from "./connection-error.ts";

/** What a SETTINGS frame changed that the endpoint must act on. */
export interface SettingsChange {
  /** How much every open stream's send window moves (SETTINGS_INITIAL_WINDOW_SIZE). */
  readonly windowDelta: number;
  /** The HPACK table size the encoder may now use, when the peer named one. */
  readonly headerTableSize: number | undefined;
}

/** The settings a peer announced (RFC 9113 §6.5.2), checked as they arrive. */
export class PeerSettings {
  maxFrameSize = DEFAULT_MAX_FRAME_SIZE;
  initialWindow = DEFAULT_WINDOW;
  maxStreams = Number.POSITIVE_INFINITY;

  /** Applies a SETTINGS payload in order; a value out of range is a connection error. */
  apply(payload: Buffer): SettingsChange {
    if (payload.length % 6 !== 0)
      throw new ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not in 6-octet entries");
    const before = this.initialWindow;
    let headerTableSize: number | undefined;
    for (let at = 0; at < payload.length; at += 6) {
      const id = payload.readUInt16BE(at);
      const value = payload.readUInt32BE(at + 2);
      if (id === Setting.HEADER_TABLE_SIZE) headerTableSize = value;
      else this.applyOne(id, value);
    }
    return { windowDelta: this.initialWindow - before, headerTableSize };
  }

  private applyOne(id: number, value: number): void {
    switch (id) {
      case Setting.ENABLE_PUSH:
        if (value > 1) throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH ${value}`);
        return;
      case Setting.MAX_CONCURRENT_STREAMS:
        this.maxStreams = value;
        return;
      case Setting.INITIAL_WINDOW_SIZE:
        if (value > MAX_WINDOW)
          throw new ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${value}`);
        this.initialWindow = value;
        return;
      case Setting.MAX_FRAME_SIZE:
        if (value < DEFAULT_MAX_FRAME_SIZE || value > 0xffffff)
          throw new ConnectionError(ErrorCode.PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value}`);
        this.maxFrameSize = value;
        return;
      default:
        // MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored (§6.5.2).
        return;
    }
  }
}
