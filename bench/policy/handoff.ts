/**
 * What one policy update costs a fast-path worker to take in: the agent hands each worker the
 * documents the policy codec decoded, the worker compiles them. The old hand-off (documents written
 * as YAML, parsed, checked and compiled again in the worker) is measured beside it for comparison.
 * Run: npx tsx bench/policy/handoff.ts [--policies 200] [--updates 40]
 */
import {
  checkPolicySet,
  compilePolicySet,
  parsePolicyDocuments,
  stringifyPolicyDocuments,
} from "../../core/policy/index.ts";
import type { PolicyDocument } from "../../core/policy/index.ts";
import { numberArg } from "./args.ts";

const POLICIES = numberArg("policies", 200);
const UPDATES = numberArg("updates", 40);

function documents(): PolicyDocument[] {
  const text: string[] = [];
  for (let i = 0; i < POLICIES; i++) {
    text.push(`apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: svc-${i} }
spec:
  selector: { matchLabels: { app: svc-${i} } }
  ingress:
    - action: allow
      from: [{ matchLabels: { app: svc-${(i + 1) % POLICIES} } }]
      ports: [8080]
      http: { methods: [GET, POST], paths: ["/v1/*/items", "/v1/orders/**", "/health"] }
`);
  }
  const r = parsePolicyDocuments(text.join("---\n"), "synthetic.yaml");
  if (!r.ok) throw new Error("synthetic policies must validate");
  return r.documents.map((d) => d.document);
}

/** This process's CPU ms per call, after three warm-up calls. */
function cpuMs(f: () => void): number {
  for (let i = 0; i < 3; i++) f();
  const start = process.cpuUsage();
  for (let i = 0; i < UPDATES; i++) f();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / UPDATES / 1000;
}

const docs = documents();
// structuredClone stands for the worker-thread boundary each form crosses.
const current = cpuMs(() => compilePolicySet(structuredClone(docs)));
const yamlRoundTrip = cpuMs(() => {
  const parsed = parsePolicyDocuments(structuredClone(stringifyPolicyDocuments(docs)), "PolicySet");
  if (!parsed.ok || checkPolicySet(parsed.documents).length > 0) throw new Error("round trip failed");
  compilePolicySet(parsed.documents.map((d) => d.document));
});
console.log(
  `node ${process.version}, ${POLICIES} policies, ${UPDATES} updates, CPU ms per update per worker`,
);
console.log(`${current.toFixed(2).padStart(8)}  documents from the codec, compiled (what the agent does)`);
console.log(
  `${yamlRoundTrip.toFixed(2).padStart(8)}  written as YAML, parsed, checked, compiled (the hand-off before)`,
);
