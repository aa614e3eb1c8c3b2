import { versionOf, type ResourceSet } from "./snapshot.ts";
import { NOTHING_VERSION } from "./unserved.ts";
import { encodeSotwResponse, type SotwRequest } from "./wire.ts";
import { BaseStream, answerState, type Answer, type Outbox, type TypeStatus } from "./stream.ts";

/**
 * A state-of-the-world ADS stream: per type, the names subscribed (or wildcard) and the last version
 * sent; every response carries the whole subscribed set. Wildcard streams are written the server's
 * shared response for the set (encoded once for all of them).
 */

/** Per-type state of a state-of-the-world stream. */
interface SotwTypeState extends Outbox {
  /** false: answered as having no resources, and never from the snapshot. */
  served: boolean;
  /** null = wildcard. */
  names: Set<string> | null;
  /** Whether the client ever named resources (after that, an empty list unsubscribes all). */
  explicit: boolean;
  lastSentVersion: string | undefined;
  /** Resources in the last response. */
  sentCount: number;
  nonce: string | undefined;
  answer: Answer;
  /** A deferred response is owed even if the version did not change (the names did). */
  forceDeferred: boolean;
}

export class SotwStream extends BaseStream {
  readonly protocol = "sotw";
  protected readonly types = new Map<string, SotwTypeState>();

  handle(req: SotwRequest): void {
    const typeUrl = req.type_url;
    let state = this.types.get(typeUrl);
    const names = req.resource_names;
    if (!state) {
      const served = this.admitType(typeUrl);
      const wildcard = names.length === 0 || names.includes("*");
      state = {
        served,
        names: wildcard ? null : this.boundedNames(typeUrl, names),
        explicit: !wildcard,
        lastSentVersion: req.version_info === "" ? undefined : req.version_info,
        sentCount: 0,
        nonce: undefined,
        answer: { ackedNonce: undefined, error: undefined },
        inFlight: false,
        deferred: false,
        forceDeferred: false,
      };
      this.types.set(typeUrl, state);
      this.respond(typeUrl, state, false);
      return;
    }
    if (req.response_nonce !== (state.nonce ?? "")) {
      this.server.emit("stale", {
        nodeId: this.nodeId,
        typeUrl,
        version: req.version_info,
        nonce: req.response_nonce,
      });
      return;
    }
    if (req.response_nonce === "") {
      // A subscription change before the first response: nothing to ACK or NACK.
    } else if (req.error_detail) {
      state.answer.error = req.error_detail.message || "rejected without detail";
      this.server.emit("nack", {
        nodeId: this.nodeId,
        typeUrl,
        version: state.lastSentVersion ?? "",
        nonce: req.response_nonce,
        errorDetail: req.error_detail.message,
      });
    } else {
      state.answer.ackedNonce = req.response_nonce;
      state.answer.error = undefined;
      this.server.emit("ack", {
        nodeId: this.nodeId,
        typeUrl,
        version: req.version_info,
        nonce: req.response_nonce,
      });
    }
    const changed = this.updateNames(typeUrl, state, names);
    this.respond(typeUrl, state, changed);
  }

  /** The names of a request as the set the stream keeps, within the bounds on names. */
  private boundedNames(typeUrl: string, names: readonly string[]): Set<string> {
    for (const n of names) this.checkName(typeUrl, n);
    const set = new Set(names);
    this.checkNameCount(typeUrl, set.size);
    return set;
  }

  protected typeStatus(): TypeStatus[] {
    return [...this.types].map(([typeUrl, t]) => ({
      typeUrl,
      served: t.served,
      subscription: t.names === null ? "*" : [...t.names],
      resources: t.sentCount,
      version: t.lastSentVersion,
      state: answerState(t.nonce, t.answer),
      error: t.answer.error,
      deferred: t.deferred,
    }));
  }

  private updateNames(typeUrl: string, state: SotwTypeState, names: string[]): boolean {
    if (names.includes("*")) {
      const changed = state.names !== null;
      state.names = null;
      return changed;
    }
    if (names.length === 0 && !state.explicit) return false;
    const next = this.boundedNames(typeUrl, names);
    const prev = state.names;
    state.explicit = true;
    state.names = next;
    if (!prev || prev.size !== next.size) return true;
    for (const n of next) if (!prev.has(n)) return true;
    return false;
  }

  onSnapshot(): void {
    for (const [typeUrl, state] of this.types) this.respond(typeUrl, state, false);
  }

  protected answerDeferred(typeUrl: string): void {
    const state = this.types.get(typeUrl);
    if (!state) return;
    const force = state.forceDeferred;
    state.forceDeferred = false;
    this.respond(typeUrl, state, force);
  }

  /** Sends the subscribed subset when it differs from what was last sent (or the subscription changed). */
  private respond(typeUrl: string, state: SotwTypeState, force: boolean): void {
    if (this.mustDefer(state)) {
      state.forceDeferred ||= force;
      return;
    }
    if (!state.served) {
      this.respondNothing(typeUrl, state, force);
      return;
    }
    const set = this.snapshot.set(typeUrl);
    if (state.names === null) {
      if (!force && set.version === state.lastSentVersion) return;
      const shared = this.server.sotwResponse(set, this.lastNonce);
      this.lastNonce = shared.nonce;
      this.sent(state, set.version, shared.nonceText, set.items.size);
      this.send(typeUrl, state, shared.bytes);
      return;
    }
    const subset = pick(set, state.names);
    const version = versionOf(subset);
    if (!force && version === state.lastSentVersion) return;
    const nonce = this.nextNonce();
    this.sent(state, version, nonce, subset.length);
    const body = Buffer.concat(subset.map((r) => r.sotwEntry));
    this.send(typeUrl, state, encodeSotwResponse(version, typeUrl, nonce, body));
  }

  /**
   * An unserved type gets an empty response, as a served type with no resources would: for a
   * wildcard subscription that tells the client there are none (Envoy finishes initializing it at
   * once); a named one is ACKed and, as for any name absent from a response, left to the client's
   * own timeout. Sent on subscribing and on a change of names; the snapshot never changes it.
   */
  private respondNothing(typeUrl: string, state: SotwTypeState, force: boolean): void {
    if (!force && state.lastSentVersion === NOTHING_VERSION) return;
    const nonce = this.nextNonce();
    this.sent(state, NOTHING_VERSION, nonce, 0);
    this.send(typeUrl, state, encodeSotwResponse(NOTHING_VERSION, typeUrl, nonce, NO_RESOURCES));
  }

  private sent(state: SotwTypeState, version: string, nonce: string, count: number): void {
    state.sentCount = count;
    state.lastSentVersion = version;
    state.nonce = nonce;
  }
}

const NO_RESOURCES = Buffer.alloc(0);

function pick(set: ResourceSet, names: Set<string>) {
  const out = [];
  for (const n of names) {
    const r = set.items.get(n);
    if (r) out.push(r);
  }
  return out;
}
