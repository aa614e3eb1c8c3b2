/**
 * Micro-benchmark of the policy engine's hot path: ns per evaluate() / normalizeRequestPath() call.
 * Run: npx tsx bench/policy/evaluate.ts [--rounds 7] [--iterations 200000]
 */
import { fileURLToPath } from "node:url";
import { PolicyStore } from "../../controlplane/policy-store/store.ts";
import type { Peer } from "../../core/identity.ts";
import type { Labels } from "../../core/labels.ts";
import {
  compilePolicySet,
  evaluate,
  normalizeRequestPath,
  parsePolicyDocuments,
} from "../../core/policy/index.ts";
import type { AuthzRequest, CompiledPolicySet } from "../../core/policy/index.ts";
import { numberArg } from "./args.ts";

const ROUNDS = numberArg("rounds", 7);
const ITERATIONS = numberArg("iterations", 200_000);

function workload(labels: Labels): Peer {
  return {
    kind: "workload",
    identity: {
      spiffeId: `spiffe://sigil.local/workload/${labels.app}`,
      trustDomain: "sigil.local",
      labels,
      serial: "1",
      notAfter: new Date(8.64e15),
    },
  };
}

/**
 * Median ns/op over ROUNDS rounds of ITERATIONS calls, by wall clock and by this process's CPU time (the
 * latter is what to compare when the machine is shared). `sink` keeps the work observable.
 */
let sink = 0;
function measure(fn: () => number): { wall: number; cpu: number } {
  for (let i = 0; i < ITERATIONS; i++) sink += fn();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    for (let i = 0; i < ITERATIONS; i++) sink += fn();
    wall.push(Number(process.hrtime.bigint() - start) / ITERATIONS);
    const used = process.cpuUsage(cpuStart);
    cpu.push(((used.user + used.system) * 1000) / ITERATIONS);
  }
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  return { wall: median(wall), cpu: median(cpu) };
}

/** 200 policies for 200 other apps plus 20 mesh-wide ones: a large mesh's set, seen by one workload. */
function largeSet(): CompiledPolicySet {
  const docs: string[] = [];
  for (let i = 0; i < 200; i++) {
    docs.push(`apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: svc-${i} }
spec:
  selector: { matchLabels: { app: svc-${i} } }
  ingress:
    - action: allow
      from: [{ matchLabels: { app: svc-${(i + 1) % 200} } }]
      ports: [8080]
      http: { methods: [GET, POST], paths: ["/v1/*/items", "/v1/orders/**", "/health"] }
`);
  }
  for (let i = 0; i < 20; i++) {
    docs.push(`apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: mesh-${i} }
spec:
  selector: { matchExpressions: [{ key: env, operator: NotEquals, value: dev-${i} }] }
  ingress:
    - action: deny
      from: [{ matchLabels: { quarantined: "true", shard: "${i}" } }]
    - action: log
      http: { paths: ["/debug/${i}/**"] }
`);
  }
  const r = parsePolicyDocuments(docs.join("---\n"), "large.yaml");
  if (!r.ok) throw new Error("synthetic policies must validate");
  return compilePolicySet(r.documents.map((d) => d.document));
}

function cidrSet(): CompiledPolicySet {
  const cidrs: string[] = [];
  for (let i = 0; i < 1000; i++)
    cidrs.push(`"10.${i >> 8}.${i & 255}.0/24"`, `"2001:db8:${i.toString(16)}::/48"`);
  const r = parsePolicyDocuments(
    `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: egress }
spec:
  selector: {}
  egress:
    - action: allow
      to: [{ cidrs: [${cidrs.join(", ")}] }]
`,
    "cidrs.yaml",
  );
  if (!r.ok) throw new Error("synthetic policies must validate");
  return compilePolicySet(r.documents.map((d) => d.document));
}

const store = await PolicyStore.open({
  directory: fileURLToPath(new URL("../../examples/policies/", import.meta.url)),
  watch: false,
});
const demo = store.current().set;
await store.close();
const large = largeSet();
const cidrs = cidrSet();

const api: Labels = { app: "api" };
const db: Labels = { app: "db" };
const web = workload({ app: "web" });
const apiPeer = workload({ app: "api" });
const rogue = workload({ app: "rogue" });
const svc7: Labels = { app: "svc-7", env: "prod" };
const svc8 = workload({ app: "svc-8", env: "prod" });
const v4Dest: Peer = { kind: "external", address: "10.3.200.17" };
const v6Dest: Peer = { kind: "external", address: "2001:db8:3e7:1::9" };
const headers = { "user-agent": "bench", accept: "*/*" };
const verdict = (set: CompiledPolicySet, r: AuthzRequest): number =>
  evaluate(set, r).verdict === "allow" ? 1 : 0;

const cases: [string, () => number][] = [
  ["baseline: an empty call (harness overhead)", () => 1],
  [
    "L4 allow, api → db:5432 (demo set)",
    () =>
      verdict(demo, {
        direction: "ingress",
        local: { labels: db },
        peer: apiPeer,
        port: 5432,
        mode: "enforce",
      }),
  ],
  [
    "L7 allow, web → api GET /api/orders/42?x=1 (demo set)",
    () =>
      verdict(demo, {
        direction: "ingress",
        local: { labels: api },
        peer: web,
        port: 8080,
        http: { method: "GET", path: "/api/orders/42?x=1", host: "api.local", headers },
        mode: "enforce",
      }),
  ],
  [
    "L7 default deny, rogue → api (demo set, log rule hit)",
    () =>
      verdict(demo, {
        direction: "ingress",
        local: { labels: api },
        peer: rogue,
        port: 8080,
        http: { method: "GET", path: "/api/orders", host: "api.local", headers },
        mode: "enforce",
      }),
  ],
  [
    "L7 allow, 220-policy set, glob path",
    () =>
      verdict(large, {
        direction: "ingress",
        local: { labels: svc7 },
        peer: svc8,
        port: 8080,
        http: { method: "GET", path: "/v1/abc/items", host: "svc-7", headers },
        mode: "enforce",
      }),
  ],
  [
    "L7 allow, 220-policy set, new labels object per call (no view cache)",
    () =>
      verdict(large, {
        direction: "ingress",
        local: { labels: { app: "svc-7", env: "prod" } },
        peer: svc8,
        port: 8080,
        http: { method: "GET", path: "/v1/abc/items", headers },
        mode: "enforce",
      }),
  ],
  [
    "egress CIDR allow, 2000 blocks (v4), same connection",
    () =>
      verdict(cidrs, {
        direction: "egress",
        local: { labels: api },
        peer: v4Dest,
        port: 443,
        mode: "enforce",
      }),
  ],
  [
    "egress CIDR allow, 2000 blocks (v6), same connection",
    () =>
      verdict(cidrs, {
        direction: "egress",
        local: { labels: api },
        peer: v6Dest,
        port: 443,
        mode: "enforce",
      }),
  ],
  [
    "egress CIDR allow, 2000 blocks (v6), new connection (address parsed)",
    () =>
      verdict(cidrs, {
        direction: "egress",
        local: { labels: api },
        peer: { kind: "external", address: "2001:db8:3e7:1::9" },
        port: 443,
        mode: "enforce",
      }),
  ],
  [
    "normalizeRequestPath /api/v1/orders/123?x=1",
    () => (normalizeRequestPath("/api/v1/orders/123?x=1").ok ? 1 : 0),
  ],
  [
    "normalizeRequestPath /api/%76%31/./a//b/../orders;x=1",
    () => (normalizeRequestPath("/api/%76%31/./a//b/../orders;x=1").ok ? 1 : 0),
  ],
];

console.log(`node ${process.version}, ${ROUNDS} rounds x ${ITERATIONS} iterations, median ns/op (wall, cpu)`);
for (const [name, fn] of cases) {
  const { wall, cpu } = measure(fn);
  console.log(`${wall.toFixed(0).padStart(7)} ${cpu.toFixed(0).padStart(7)}  ${name}`);
}
if (sink < 0) console.log(sink);
