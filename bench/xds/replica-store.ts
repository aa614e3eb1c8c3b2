import pino from "pino";
import { EtcdPolicies } from "../../controlplane/store/etcd-policies.ts";
import { EtcdState } from "../../controlplane/store/etcd-state.ts";
import { now } from "./children.ts";

/**
 * A bench replica's side of etcd, through the control plane's own store classes: the policy file
 * is written with `EtcdPolicies` (validated, then stored) and every replica follows it with a
 * watched prefix, as the control plane's replicas follow `policies/`.
 */

const FILE = "mesh.yaml";

export interface ReplicaStore {
  /** Writes a changed policy file through this replica; resolves with the time the write began. */
  apply(): Promise<number>;
}

/** The policy text of the `n`th change: a valid document that differs from every other change. */
function policyText(n: number): string {
  return `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: mesh-wide-${n} }
spec:
  selector: { matchLabels: { env: prod } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      http: { methods: [GET], paths: [ "/v${n}/**" ] }
`;
}

/** Connects to etcd and calls `changed(revision)` on every change of the policy file seen by the watch. */
export async function openReplicaStore(
  endpoints: readonly string[],
  changed: (revision: number) => void,
): Promise<ReplicaStore> {
  const etcd = await EtcdState.connect({
    endpoints,
    prefix: "/sigil-bench/",
    log: pino({ level: "silent" }),
  });
  const policies = await EtcdPolicies.open(etcd);
  const watched = await etcd.watchPrefix("policies/");
  watched.on("change", (key) => {
    const stored = watched.get(key);
    if (key === FILE && stored) changed(Number(stored.modRevision));
  });
  let changes = 0;
  return {
    async apply() {
      const at = now();
      await policies.apply(FILE, policyText(++changes));
      return at;
    },
  };
}
