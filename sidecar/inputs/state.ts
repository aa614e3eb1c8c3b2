import { EventEmitter } from "node:events";
import { emptyPolicySet } from "../../core/policy/index.ts";
import { RevocationIndex } from "../../core/svid/revocation.ts";
import type {
  CredentialSource,
  MeshDestination,
  PeerDirectory,
  PolicySnapshot,
  PolicySource,
  TlsCredentials,
} from "./sources.ts";

/**
 * Holders for the sidecar's changing inputs. The xDS subscription and the identity manager write
 * them; the data path only reads. Every write replaces an immutable value, so a connection sees a
 * consistent snapshot and the next one sees the new state.
 */

export class CredentialHolder extends EventEmitter<{ rotate: [] }> implements CredentialSource {
  constructor(private value: TlsCredentials) {
    super();
  }
  current(): TlsCredentials {
    return this.value;
  }
  set(value: TlsCredentials): void {
    this.value = value;
    this.emit("rotate");
  }
}

export class PolicyHolder extends EventEmitter<{ change: [] }> implements PolicySource {
  private value: PolicySnapshot;
  constructor(initial: Partial<PolicySnapshot> & { trustDomain: string }) {
    super();
    this.value = {
      policies: initial.policies ?? emptyPolicySet(),
      mode: initial.mode ?? "enforce",
      revocations: initial.revocations ?? RevocationIndex.empty(initial.trustDomain),
    };
  }
  current(): PolicySnapshot {
    return this.value;
  }
  update(change: Partial<PolicySnapshot>): void {
    this.value = { ...this.value, ...change };
    this.emit("change");
  }
}

/** Destinations by "address:port" (IPv6 addresses unbracketed), replaced as a whole on every update. */
export class PeerDirectoryHolder implements PeerDirectory {
  private entries = new Map<string, MeshDestination>();
  lookup(address: string, port: number): MeshDestination | null {
    return this.entries.get(`${address}:${port}`) ?? null;
  }
  replace(entries: Iterable<readonly [{ address: string; port: number }, MeshDestination]>): void {
    const next = new Map<string, MeshDestination>();
    for (const [where, dest] of entries) next.set(`${where.address}:${where.port}`, dest);
    this.entries = next;
  }
  get size(): number {
    return this.entries.size;
  }
}
