import type { ResourceSet } from "./snapshot.ts";
import { NOTHING_VERSION } from "./unserved.ts";
import { encodeDeltaResponse, type DeltaRequest } from "./wire.ts";
import { BaseStream, answerState, type Answer, type Outbox, type TypeStatus } from "./stream.ts";

/**
 * An incremental (delta) ADS stream: per type, the names subscribed (or wildcard) and what the node
 * holds, name by name; a response carries only what changed and what was removed. A plain wildcard
 * stream that mirrors a set exactly is written the server's shared delta for the change.
 */

/** Per-type state of a delta stream. */
interface DeltaTypeState extends Outbox {
  /** false: every name is answered as not existing, and never from the snapshot. */
  served: boolean;
  wildcard: boolean;
  names: Set<string>;
  /** What the client holds: name → version; "" = told it does not exist. */
  known: Map<string, string>;
  /**
   * The set `known` mirrors exactly (every resource at its version, nothing else), while the
   * stream is a plain wildcard subscription; lets a change use the server's shared response.
   */
  mirror: ResourceSet | undefined;
  nonce: string | undefined;
  answer: Answer;
  /** Unserved type: names to answer as not existing in its next response. */
  absent: Set<string>;
}

/**
 * A wildcard subscription not answered yet on this stream is answered even when there is nothing
 * to send: Envoy finishes initializing a wildcard subscription (CDS, LDS) only on its first
 * response, and would otherwise wait out its initial_fetch_timeout (forever when that is 0).
 */
function awaitsFirstAnswer(state: DeltaTypeState): boolean {
  return state.wildcard && state.nonce === undefined;
}

export class DeltaStream extends BaseStream {
  readonly protocol = "delta";
  protected readonly types = new Map<string, DeltaTypeState>();

  handle(req: DeltaRequest): void {
    const typeUrl = req.type_url;
    let state = this.types.get(typeUrl);
    const first = !state;
    if (!state) {
      const served = this.admitType(typeUrl);
      state = {
        served,
        // A first request without names subscribes to every resource of the type.
        wildcard: req.resource_names_subscribe.length === 0,
        names: new Set(),
        // What the client says it holds of an unserved type is answered, not kept.
        known: served ? new Map(Object.entries(req.initial_resource_versions)) : new Map(),
        mirror: undefined,
        nonce: undefined,
        answer: { ackedNonce: undefined, error: undefined },
        absent: new Set(),
        inFlight: false,
        deferred: false,
      };
      this.types.set(typeUrl, state);
      this.subscribe(typeUrl, state, req.resource_names_subscribe);
    } else {
      if (req.resource_names_subscribe.length > 0 || req.resource_names_unsubscribe.length > 0)
        state.mirror = undefined;
      this.subscribe(typeUrl, state, req.resource_names_subscribe);
      for (const n of req.resource_names_unsubscribe) {
        if (n === "*") state.wildcard = false;
        else state.names.delete(n);
      }
    }
    // Counted once the request is applied: one request may unsubscribe a name and subscribe another.
    this.checkNameCount(typeUrl, state.names.size);
    if (req.response_nonce !== "") {
      if (req.response_nonce !== state.nonce) {
        this.server.emit("stale", { nodeId: this.nodeId, typeUrl, version: "", nonce: req.response_nonce });
      } else if (req.error_detail) {
        state.answer.error = req.error_detail.message || "rejected without detail";
        this.server.emit("nack", {
          nodeId: this.nodeId,
          typeUrl,
          version: "",
          nonce: req.response_nonce,
          errorDetail: req.error_detail.message,
        });
      } else {
        state.answer.ackedNonce = req.response_nonce;
        state.answer.error = undefined;
        this.server.emit("ack", { nodeId: this.nodeId, typeUrl, version: "", nonce: req.response_nonce });
      }
    }
    this.dropUnsubscribed(state);
    if (state.served) this.respond(typeUrl, state);
    else this.respondNothing(typeUrl, state, req, first);
  }

  protected typeStatus(): TypeStatus[] {
    return [...this.types].map(([typeUrl, t]) => {
      let held = 0;
      for (const v of t.known.values()) if (v !== "") held++;
      return {
        typeUrl,
        served: t.served,
        subscription: t.wildcard ? "*" : [...t.names],
        resources: held,
        version: undefined,
        state: answerState(t.nonce, t.answer),
        error: t.answer.error,
        deferred: t.deferred,
      };
    });
  }

  /** Adds subscribed names ("*": every resource of the type), each within the bound on length. */
  private subscribe(typeUrl: string, state: DeltaTypeState, names: readonly string[]): void {
    for (const n of names) {
      if (n === "*") {
        state.wildcard = true;
        continue;
      }
      this.checkName(typeUrl, n);
      state.names.add(n);
    }
  }

  /** Names the client no longer wants are forgotten without a response (it drops them itself). */
  private dropUnsubscribed(state: DeltaTypeState): void {
    if (state.wildcard) return;
    for (const n of state.known.keys()) if (!state.names.has(n)) state.known.delete(n);
  }

  onSnapshot(): void {
    for (const [typeUrl, state] of this.types) if (state.served) this.respond(typeUrl, state);
  }

  protected answerDeferred(typeUrl: string): void {
    const state = this.types.get(typeUrl);
    if (!state) return;
    if (state.served) this.respond(typeUrl, state);
    else this.sendNothing(typeUrl, state);
  }

  /**
   * An unserved type: every name the request subscribes to, or that the client says it already
   * holds, comes back in removed_resources (delta's "does not exist", which lets Envoy finish
   * warming without its fetch timeout); a wildcard subscription not answered yet gets one empty
   * response, so the client knows it was heard and that there is nothing. Unsubscribing needs no
   * answer.
   */
  private respondNothing(typeUrl: string, state: DeltaTypeState, req: DeltaRequest, first: boolean): void {
    for (const name of req.resource_names_subscribe) if (name !== "*") state.absent.add(name);
    if (first) for (const name of Object.keys(req.initial_resource_versions)) state.absent.add(name);
    this.sendNothing(typeUrl, state);
  }

  /** The names of an unserved type not answered yet, as removed; kept while a response is deferred. */
  private sendNothing(typeUrl: string, state: DeltaTypeState): void {
    if (state.absent.size === 0 && !awaitsFirstAnswer(state)) return;
    if (this.mustDefer(state)) return;
    const nonce = this.nextNonce();
    state.nonce = nonce;
    this.send(typeUrl, state, encodeDeltaResponse(NOTHING_VERSION, typeUrl, nonce, [], [...state.absent]));
    state.absent.clear();
  }

  /**
   * Sends what differs between what the client was sent (`known`, `mirror`: updated as each
   * response is handed to the transport) and the snapshot, so a response deferred behind a slow
   * one carries every change since, and only those.
   */
  private respond(typeUrl: string, state: DeltaTypeState): void {
    if (this.mustDefer(state)) return;
    const set = this.snapshot.set(typeUrl);
    const plain = state.wildcard && state.names.size === 0;
    if (plain && state.mirror) {
      if (state.mirror === set) return;
      const shared = this.server.deltaResponse(state.mirror, set, this.lastNonce);
      state.mirror = set;
      if (!shared) return;
      for (const [name, version] of shared.updated) state.known.set(name, version);
      for (const name of shared.removed) state.known.delete(name);
      this.lastNonce = shared.nonce;
      state.nonce = shared.nonceText;
      this.send(typeUrl, state, shared.bytes);
      return;
    }
    // After a full answer to a plain wildcard subscription the client holds exactly `set`.
    if (plain) state.mirror = set;
    const entries: Buffer[] = [];
    const removed: string[] = [];
    const offer = (name: string) => {
      const r = set.items.get(name);
      const held = state.known.get(name);
      if (r) {
        if (held !== r.version) {
          entries.push(r.deltaEntry);
          state.known.set(name, r.version);
        }
      } else if (held !== "") {
        // Held and now gone, or named and never existed: tell the client it does not exist.
        if (held !== undefined || !state.wildcard) removed.push(name);
        if (state.names.has(name)) state.known.set(name, "");
        else state.known.delete(name);
      }
    };
    if (state.wildcard) for (const name of set.items.keys()) offer(name);
    for (const name of state.names) offer(name);
    // Deleting or re-setting existing keys while iterating a Map is safe and visits each key once.
    for (const name of state.known.keys()) if (!set.items.has(name)) offer(name);
    if (entries.length === 0 && removed.length === 0 && !awaitsFirstAnswer(state)) return;
    const nonce = this.nextNonce();
    state.nonce = nonce;
    this.send(typeUrl, state, encodeDeltaResponse(set.version, typeUrl, nonce, entries, removed));
  }
}
