import type { IncomingHttpHeaders } from "node:http2";
import type { Peer } from "../../../../core/identity.ts";
import type { Decision, HttpRequestFacts } from "../../../../core/policy/index.ts";
import type { OnSent } from "./endpoint-stream.ts";

/**
 * Where a relayed stream is:
 * - "deciding": its request waits for a name lookup or, for a bodiless method, the end of its body;
 * - "opening": allowed, waiting for an upstream connection or a free stream on it;
 * - "forwarded": open on an upstream connection;
 * - "answered": the sidecar answered it itself (refused, malformed, upstream unavailable);
 * - "done": finished either way.
 */
export type RelayPhase = "deciding" | "opening" | "forwarded" | "answered" | "done";

/** The upstream connection a stream is forwarded on (an `UpstreamLink`), as the relay drives it. */
export interface StreamLink {
  sendData(stream: RelayStream, data: Buffer, end: boolean, onSent: OnSent): void;
  sendTrailers(stream: RelayStream, fields: string[], neverIndexed: number[]): void;
  /** The credit callback for response DATA of the stream with this upstream id. */
  creditFor(upId: number): OnSent;
  reset(stream: RelayStream, code: number): void;
  finished(stream: RelayStream): void;
}

/** One downstream stream and, once forwarded, its upstream stream. */
export class RelayStream {
  phase: RelayPhase = "deciding";
  link: StreamLink | undefined;
  upId = 0;
  /** DATA received before the stream was forwarded, in order; its flow-control credit is held. */
  readonly pending: Buffer[] = [];
  pendingEnd = false;
  /** Trailers the client sent before the stream was forwarded. */
  pendingTrailers: string[] | undefined;
  requestEnded: boolean;
  /** Final response headers went to the client: later failures reset instead of answering. */
  responseStarted = false;
  /** The response's END_STREAM came: the flow is recorded, the request may still be uploading. */
  responseEnded = false;
  receivedBytes = 0;
  sentBytes = 0;
  status = 0;
  grpcStatus: number | undefined;
  decision: Decision | undefined;
  recorded = false;
  /** Returns the client's credit for request DATA that left upstream. */
  requestCredit: OnSent | undefined;
  /** Returns the upstream's credit for response DATA that left for the client. */
  responseCredit: OnSent | undefined;

  constructor(
    readonly downId: number,
    readonly headers: IncomingHttpHeaders,
    readonly facts: HttpRequestFacts,
    readonly peer: Peer,
    readonly grpc: boolean,
    /** Names the client sent never-indexed: forwarded the same way (RFC 7541 §7.1.3). */
    readonly neverIndexedNames: ReadonlySet<string> | undefined,
    /** The content-length the request declared, which its DATA must add up to (RFC 9113 §8.1.1). */
    readonly declaredLength: number | undefined,
    readonly startedAt: number,
    endStream: boolean,
  ) {
    this.requestEnded = endStream;
  }

  /** True once the DATA seen contradicts the declared content-length. */
  lengthMismatch(ended: boolean): boolean {
    if (this.declaredLength === undefined) return false;
    return this.receivedBytes > this.declaredLength || (ended && this.receivedBytes !== this.declaredLength);
  }
}
