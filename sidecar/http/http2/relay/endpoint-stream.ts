/** Told how many octets of some DATA left: the side they came from gets that credit back. */
export type OnSent = (n: number) => void;

/** DATA waiting for flow-control credit: a buffer and how much of it already left. */
export class OutboundData {
  offset = 0;

  constructor(
    public data: Buffer,
    readonly endStream: boolean,
    readonly onSent: OnSent | undefined,
  ) {}

  advance(n: number): void {
    this.data = this.data.subarray(n);
    this.offset += n;
  }
}

/** One stream as an endpoint keeps it: its windows, what waits to be sent, which sides ended. */
export class EndpointStream {
  /** What this side may still send, as the peer granted. */
  sendWindow: number;
  /** What the peer may still send before credit returns. */
  recvWindow: number;
  recvUnreturned = 0;
  readonly queue: OutboundData[] = [];
  /** Trailers that wait behind the queued DATA. */
  trailers: { fields: readonly string[]; neverIndexed: readonly number[] } | undefined;
  /** END_STREAM is queued behind DATA. */
  ending = false;
  localEnded = false;
  remoteEnded = false;
  /** A reset to send once this side's END_STREAM is out (RFC 9113 §8.1: stop a client still sending). */
  resetAfterEnd: number | undefined;

  constructor(
    readonly id: number,
    sendWindow: number,
    recvWindow: number,
  ) {
    this.sendWindow = sendWindow;
    this.recvWindow = recvWindow;
  }
}
