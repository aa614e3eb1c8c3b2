/**
 * Where an HTTP/1.1 message body ends, tracked byte for byte as the body streams through, so that
 * the bytes after it (the next request on a keep-alive connection) are never taken for body and no
 * body byte is ever taken for a request. The bytes are forwarded as received; chunked framing is
 * validated on the way (chunk-size digits only and bounded, extensions without control characters,
 * CRLF exactly where the grammar puts it, trailer fields well-formed and bounded), so the next hop
 * reads the same boundaries.
 */
import { isSidecarFieldName } from "../client-cert.ts";

export class FramingError extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = "FramingError";
  }
}

export type BodyKind = "none" | "length" | "chunked" | "close";

const enum Chunk {
  Size,
  /** After ";": an extension name must follow. */
  ExtNameStart,
  ExtName,
  /** After "=": a token or a quoted string must follow. */
  ExtValueStart,
  ExtToken,
  ExtQuoted,
  ExtQuotedPair,
  ExtAfterQuote,
  SizeLf,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerName,
  TrailerValue,
  TrailerLf,
  LastLf,
  Done,
}

/** Longest chunk-size line (digits and extensions) accepted. */
const MAX_CHUNK_LINE = 4096;
const MAX_SIZE_DIGITS = 16;

function isHex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

// RFC 9110 tchar.
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
  TCHAR[c.charCodeAt(0)] = 1;

/** HTAB, SP, visible ASCII and obs-text: what may appear inside a field value. */
function isFieldChar(c: number): boolean {
  return c === 0x09 || (c >= 0x20 && c !== 0x7f);
}

/** qdtext of a quoted string, without obs-text (RFC 9110 §5.6.4). */
function isQdtext(c: number): boolean {
  return c === 0x09 || c === 0x20 || c === 0x21 || (c >= 0x23 && c <= 0x5b) || (c >= 0x5d && c <= 0x7e);
}

/** Fields never taken from a trailer section: those that frame or route a message. */
const FORBIDDEN_TRAILERS = new Set(["content-length", "transfer-encoding", "host"]);

/**
 * Whether a trailer field may not appear: framing and routing fields, and the caller identity (XFCC)
 * and user fields the inbound sidecar vouches for, in any spelling (a trailer would let a caller append its own).
 */
function forbiddenTrailer(lower: string): boolean {
  return FORBIDDEN_TRAILERS.has(lower) || isSidecarFieldName(lower);
}

export class BodyFramer {
  /** Payload bytes seen so far (for chunked bodies: chunk data only). */
  dataBytes = 0;
  private remaining: number;
  private state: Chunk = Chunk.Size;
  private size = 0;
  private digits = 0;
  private lineBytes = 0;
  private trailerBytes = 0;
  private trailerName = "";
  private finished: boolean;

  constructor(
    readonly kind: BodyKind,
    length: number,
    private readonly maxTrailerBytes: number,
  ) {
    this.remaining = kind === "length" ? length : 0;
    this.finished = kind === "none" || (kind === "length" && length === 0);
  }

  static forRequest(contentLength: number | null, chunked: boolean, maxTrailerBytes: number): BodyFramer {
    if (chunked) return new BodyFramer("chunked", 0, maxTrailerBytes);
    return new BodyFramer(contentLength === null ? "none" : "length", contentLength ?? 0, maxTrailerBytes);
  }

  get done(): boolean {
    return this.finished;
  }

  /** A close-delimited body ends when its connection does. */
  endOfInput(): void {
    if (this.kind === "close") this.finished = true;
  }

  /**
   * Takes the bytes of `buf` from `start` that belong to this body and returns how many. With
   * `spans`, the payload ranges inside them are appended as [start, end) pairs (chunk data without
   * its framing). Throws FramingError at the first byte that breaks the framing.
   */
  consume(buf: Buffer, start: number, spans?: number[]): number {
    if (this.finished) return 0;
    const avail = buf.length - start;
    if (this.kind === "close") {
      this.dataBytes += avail;
      spans?.push(start, buf.length);
      return avail;
    }
    if (this.kind === "length") {
      const n = avail < this.remaining ? avail : this.remaining;
      this.remaining -= n;
      this.dataBytes += n;
      spans?.push(start, start + n);
      if (this.remaining === 0) this.finished = true;
      return n;
    }
    return this.consumeChunked(buf, start, spans) - start;
  }

  private consumeChunked(buf: Buffer, start: number, spans: number[] | undefined): number {
    let i = start;
    const end = buf.length;
    while (i < end) {
      const c = buf[i] as number;
      switch (this.state) {
        case Chunk.Size: {
          const d = isHex(c);
          if (d >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS || this.size > (Number.MAX_SAFE_INTEGER - d) / 16)
              throw new FramingError("chunk size too large");
            this.size = this.size * 16 + d;
          } else if (this.digits === 0) {
            throw new FramingError("chunk size is not a hexadecimal number");
          } else if (c === 0x3b) {
            this.state = Chunk.ExtNameStart;
          } else if (c === 0x0d) {
            this.state = Chunk.SizeLf;
          } else {
            throw new FramingError("invalid character after the chunk size");
          }
          this.countLine();
          i++;
          break;
        }
        case Chunk.ExtNameStart:
          if (TCHAR[c] !== 1) throw new FramingError("chunk extension without a name");
          this.state = Chunk.ExtName;
          this.countLine();
          i++;
          break;
        case Chunk.ExtName:
          if (c === 0x3d) this.state = Chunk.ExtValueStart;
          else this.extensionEnd(c, "invalid character in a chunk extension name");
          this.countLine();
          i++;
          break;
        case Chunk.ExtValueStart:
          if (c === 0x22) this.state = Chunk.ExtQuoted;
          else if (TCHAR[c] === 1) this.state = Chunk.ExtToken;
          else throw new FramingError("chunk extension without a value after =");
          this.countLine();
          i++;
          break;
        case Chunk.ExtToken:
          this.extensionEnd(c, "invalid character in a chunk extension value");
          this.countLine();
          i++;
          break;
        case Chunk.ExtQuoted:
          if (c === 0x22) this.state = Chunk.ExtAfterQuote;
          else if (c === 0x5c) this.state = Chunk.ExtQuotedPair;
          else if (!isQdtext(c)) throw new FramingError("invalid character in a quoted chunk extension");
          this.countLine();
          i++;
          break;
        case Chunk.ExtQuotedPair:
          if (c !== 0x09 && (c < 0x20 || c > 0x7e))
            throw new FramingError("invalid quoted pair in a chunk extension");
          this.state = Chunk.ExtQuoted;
          this.countLine();
          i++;
          break;
        case Chunk.ExtAfterQuote:
          if (c === 0x3b) this.state = Chunk.ExtNameStart;
          else if (c === 0x0d) this.state = Chunk.SizeLf;
          else throw new FramingError("invalid character after a quoted chunk extension");
          this.countLine();
          i++;
          break;
        case Chunk.SizeLf:
          if (c !== 0x0a) throw new FramingError("chunk size line not ended by CRLF");
          i++;
          this.lineBytes = 0;
          this.digits = 0;
          if (this.size === 0) {
            this.state = Chunk.TrailerStart;
          } else {
            this.remaining = this.size;
            this.size = 0;
            this.state = Chunk.Data;
          }
          break;
        case Chunk.Data: {
          const n = end - i < this.remaining ? end - i : this.remaining;
          spans?.push(i, i + n);
          i += n;
          this.dataBytes += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = Chunk.DataCr;
          break;
        }
        case Chunk.DataCr:
          if (c !== 0x0d) throw new FramingError("chunk data longer than its size");
          this.state = Chunk.DataLf;
          i++;
          break;
        case Chunk.DataLf:
          if (c !== 0x0a) throw new FramingError("chunk data not ended by CRLF");
          this.state = Chunk.Size;
          i++;
          break;
        case Chunk.TrailerStart:
          if (c === 0x0d) this.state = Chunk.LastLf;
          else if (TCHAR[c] === 1) {
            this.state = Chunk.TrailerName;
            this.trailerName = String.fromCharCode(c);
          } else throw new FramingError("malformed trailer field");
          this.countTrailer();
          i++;
          break;
        case Chunk.TrailerName:
          if (c === 0x3a) {
            const name = this.trailerName.toLowerCase();
            if (forbiddenTrailer(name)) throw new FramingError(`${name} in the trailer section`);
            this.state = Chunk.TrailerValue;
          } else if (TCHAR[c] !== 1) throw new FramingError("invalid trailer field name");
          else this.trailerName += String.fromCharCode(c);
          this.countTrailer();
          i++;
          break;
        case Chunk.TrailerValue:
          if (c === 0x0d) this.state = Chunk.TrailerLf;
          else if (!isFieldChar(c)) throw new FramingError("control character in a trailer field");
          this.countTrailer();
          i++;
          break;
        case Chunk.TrailerLf:
          if (c !== 0x0a) throw new FramingError("trailer field not ended by CRLF");
          this.state = Chunk.TrailerStart;
          this.countTrailer();
          i++;
          break;
        case Chunk.LastLf:
          if (c !== 0x0a) throw new FramingError("chunked body not ended by CRLF");
          this.state = Chunk.Done;
          this.finished = true;
          return i + 1;
        case Chunk.Done:
          return i;
      }
    }
    return i;
  }

  /** Inside an extension name or token value: ";" starts the next extension, CR ends the line. */
  private extensionEnd(c: number, problem: string): void {
    if (c === 0x3b) this.state = Chunk.ExtNameStart;
    else if (c === 0x0d) this.state = Chunk.SizeLf;
    else if (TCHAR[c] !== 1) throw new FramingError(problem);
  }

  private countLine(): void {
    if (++this.lineBytes > MAX_CHUNK_LINE) throw new FramingError("chunk size line too long");
  }

  private countTrailer(): void {
    if (++this.trailerBytes > this.maxTrailerBytes) throw new FramingError("trailer section too large");
  }
}
