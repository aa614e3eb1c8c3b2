import { describe, expect, it } from "vitest";
import {
  checkPolicySet,
  compilePolicySet,
  formatPolicyError,
  parsePolicyDocuments,
  PolicySetError,
  stringifyPolicyDocuments,
  validatePolicyDocument,
} from "../../core/policy/index.ts";

/** Each kind of mistake must name file:line:col, the field path and a reason a user can act on. */

const HEAD = `apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata:
  name: p
spec:
  selector: { matchLabels: { app: api } }
`;

function errorsOf(text: string): string[] {
  const r = parsePolicyDocuments(text, "policies/p.yaml");
  if (r.ok) throw new Error("expected validation errors");
  return r.errors.map(formatPolicyError);
}

const CASES: [string, string, RegExp][] = [
  [
    "YAML syntax",
    `${HEAD}  ingress: [ { action: allow }\n`,
    /^policies\/p\.yaml:8:1: .*(flow|collection|\])/i,
  ],
  [
    "duplicate key",
    `${HEAD}  ingress: []\n  ingress: []\n`,
    /^policies\/p\.yaml:8:3: Map keys must be unique/,
  ],
  ["not a mapping", `- a\n- b\n`, /^policies\/p\.yaml:1:1: a policy document must be a mapping$/],
  [
    "missing kind",
    `apiVersion: sigil.dev/v1\nmetadata: { name: p }\n`,
    /^policies\/p\.yaml:1:1: kind: required field is missing$/,
  ],
  [
    "unknown kind",
    HEAD.replace("AuthorizationPolicy", "NetworkPolicy"),
    /^policies\/p\.yaml:2:7: kind: unknown kind "NetworkPolicy"/,
  ],
  [
    "wrong apiVersion",
    HEAD.replace("sigil.dev/v1", "sigil.dev/v2"),
    /^policies\/p\.yaml:1:13: apiVersion: .*sigil\.dev\/v1/,
  ],
  [
    "bad name",
    HEAD.replace("name: p", "name: Bad_Name"),
    /^policies\/p\.yaml:4:9: metadata\.name: name must be lower-case/,
  ],
  ["unknown field", `${HEAD}  ingres: []\n`, /^policies\/p\.yaml:7:3: spec\.ingres: unknown field "ingres"$/],
  [
    "missing selector",
    HEAD.replace("  selector: { matchLabels: { app: api } }\n", "  ingress: []\n"),
    /^policies\/p\.yaml:6:3: spec\.selector: required field is missing$/,
  ],
  [
    "bad action",
    `${HEAD}  ingress:\n    - action: permit\n`,
    /^policies\/p\.yaml:8:15: spec\.ingress\[0\]\.action: .*"allow"\|"deny"\|"log"/,
  ],
  [
    "missing action",
    `${HEAD}  ingress:\n    - ports: [80]\n`,
    /^policies\/p\.yaml:8:7: spec\.ingress\[0\]\.action: required field is missing$/,
  ],
  [
    "port out of range",
    `${HEAD}  ingress:\n    - action: allow\n      ports: [80, 70000]\n`,
    /^policies\/p\.yaml:9:19: spec\.ingress\[0\]\.ports\[1\]: port must be an integer 1-65535$/,
  ],
  [
    "port as string",
    `${HEAD}  ingress:\n    - action: allow\n      ports: ["80"]\n`,
    /^policies\/p\.yaml:9:15: spec\.ingress\[0\]\.ports\[0\]: port must be an integer 1-65535$/,
  ],
  [
    "label value not a string",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { matchLabels: { version: 2 } } ]\n`,
    /^policies\/p\.yaml:9:41: spec\.ingress\[0\]\.from\[0\]\.matchLabels\.version: .*expected string/,
  ],
  [
    "bad label key",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { matchLabels: { "-x": a } } ]\n`,
    /^policies\/p\.yaml:9:\d+: spec\.ingress\[0\]\.from\[0\]\.matchLabels\["-x"\]: label key "-x"/,
  ],
  [
    "unknown operator",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { matchExpressions: [ { key: a, operator: Like, value: x } ] } ]\n`,
    /^policies\/p\.yaml:9:\d+: spec\.ingress\[0\]\.from\[0\]\.matchExpressions\[0\]\.operator: .*"Equals"/,
  ],
  [
    "In without values",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { matchExpressions: [ { key: a, operator: In } ] } ]\n`,
    /^policies\/p\.yaml:9:\d+: spec\.ingress\[0\]\.from\[0\]\.matchExpressions\[0\]: operator In needs a non-empty "values" list$/,
  ],
  [
    "Exists with value",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { matchExpressions: [ { key: a, operator: Exists, value: x } ] } ]\n`,
    /^policies\/p\.yaml:9:\d+: spec\.ingress\[0\]\.from\[0\]\.matchExpressions\[0\]\.value: operator Exists takes no "value"$/,
  ],
  [
    "empty peer entry",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ {} ]\n`,
    /^policies\/p\.yaml:9:15: spec\.ingress\[0\]\.from\[0\]: empty peer entry/,
  ],
  [
    "labels mixed with cidrs",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { matchLabels: { a: b }, cidrs: [10.0.0.0/8] } ]\n`,
    /spec\.ingress\[0\]\.from\[0\]: an entry cannot mix label matchers/,
  ],
  [
    "dnsNames in ingress",
    `${HEAD}  ingress:\n    - action: allow\n      from: [ { dnsNames: [a.example.com] } ]\n`,
    /^policies\/p\.yaml:9:\d+: spec\.ingress\[0\]\.from\[0\]\.dnsNames: dnsNames is only valid in egress/,
  ],
  [
    "bad CIDR",
    `${HEAD}  egress:\n    - action: allow\n      to: [ { cidrs: ["198.18.0.0/33"] } ]\n`,
    /^policies\/p\.yaml:9:23: spec\.egress\[0\]\.to\[0\]\.cidrs\[0\]: "198\.18\.0\.0\/33" has a bad prefix length/,
  ],
  [
    "CIDR with host bits",
    `${HEAD}  egress:\n    - action: allow\n      to: [ { cidrs: ["198.18.0.1/24"] } ]\n`,
    /cidrs\[0\]: "198\.18\.0\.1\/24" has host bits set/,
  ],
  [
    "bad IPv6 CIDR",
    `${HEAD}  egress:\n    - action: allow\n      to: [ { cidrs: ["2001:db8:::/32"] } ]\n`,
    /cidrs\[0\]: "2001:db8:::\/32" is not a CIDR block/,
  ],
  [
    "bad dns wildcard",
    `${HEAD}  egress:\n    - action: allow\n      to: [ { dnsNames: ["a.*.example.com"] } ]\n`,
    /^policies\/p\.yaml:9:\d+: spec\.egress\[0\]\.to\[0\]\.dnsNames\[0\]: .*"\*" is only allowed as the whole first label/,
  ],
  [
    "path without slash",
    `${HEAD}  ingress:\n    - action: allow\n      http: { paths: ["api"] }\n`,
    /^policies\/p\.yaml:9:23: spec\.ingress\[0\]\.http\.paths\[0\]: path "api" must start with "\/"$/,
  ],
  [
    "path partial glob",
    `${HEAD}  ingress:\n    - action: allow\n      http: { paths: ["/ok", "/a/b*"] }\n`,
    /^policies\/p\.yaml:9:30: spec\.ingress\[0\]\.http\.paths\[1\]: .*"\*" must be a whole segment/,
  ],
  [
    "path ** not last",
    `${HEAD}  ingress:\n    - action: allow\n      http: { paths: ["/a/**/b"] }\n`,
    /paths\[0\]: path "\/a\/\*\*\/b": "\*\*" is only allowed as the last segment/,
  ],
  [
    "path encoded",
    `${HEAD}  ingress:\n    - action: allow\n      http: { paths: ["/a%2fb"] }\n`,
    /paths\[0\]: path "\/a%2fb" contains "%"/,
  ],
  [
    "path dot segment",
    `${HEAD}  ingress:\n    - action: allow\n      http: { paths: ["/a/../b"] }\n`,
    /paths\[0\]: path "\/a\/\.\.\/b" contains a "\.\." segment/,
  ],
  [
    "bad method",
    `${HEAD}  ingress:\n    - action: allow\n      http: { methods: ["GET POST"] }\n`,
    /http\.methods\[0\]: not a valid HTTP method token/,
  ],
  [
    "header without value or present",
    `${HEAD}  ingress:\n    - action: allow\n      http: { headers: [ { name: x-a } ] }\n`,
    /http\.headers\[0\]: header match needs "value" or "present"/,
  ],
  [
    "bad header name",
    `${HEAD}  ingress:\n    - action: allow\n      http: { headers: [ { name: "x a", value: b } ] }\n`,
    /http\.headers\[0\]\.name: not a valid HTTP header name/,
  ],
  [
    "empty methods list",
    `${HEAD}  ingress:\n    - action: allow\n      http: { methods: [] }\n`,
    /^policies\/p\.yaml:9:24: spec\.ingress\[0\]\.http\.methods: /,
  ],
  [
    "mtls mode",
    `apiVersion: sigil.dev/v1\nkind: PeerAuthentication\nmetadata: { name: m }\nspec:\n  selector: {}\n  mode: strict\n`,
    /^policies\/p\.yaml:6:9: spec\.mode: .*"STRICT"/,
  ],
  [
    "mtls port key",
    `apiVersion: sigil.dev/v1\nkind: PeerAuthentication\nmetadata: { name: m }\nspec:\n  selector: {}\n  mode: STRICT\n  portLevel: { "http": DISABLE }\n`,
    /^policies\/p\.yaml:7:\d+: spec\.portLevel\.http: port "http" is not an integer 1-65535$/,
  ],
  ["undefined alias", `${HEAD}  ingress: *nothing\n`, /^policies\/p\.yaml:\d+:\d+: .*nothing/],
];

describe("policy validation errors", () => {
  it.each(CASES)("%s", (_name, text, expected) => {
    const errors = errorsOf(text);
    expect(
      errors.some((e) => expected.test(e)),
      errors.join("\n"),
    ).toBe(true);
  });

  it("reports every error of every document, in file order", () => {
    const text = `${HEAD}  ingress:\n    - action: nope\n      ports: [0]\n---\n${HEAD.replace("name: p", "name: Q")}`;
    const errors = errorsOf(text);
    expect(errors).toHaveLength(3);
    expect(errors[0]).toMatch(/:8:15: spec\.ingress\[0\]\.action/);
    expect(errors[1]).toMatch(/:9:15: spec\.ingress\[0\]\.ports\[0\]/);
    expect(errors[2]).toMatch(/:14:9: metadata\.name/);
  });

  it("refuses alias bombs", () => {
    const lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 12; i++)
      lines.push(
        `a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(", ")}]`,
      );
    const errors = errorsOf(lines.join("\n") + "\n");
    expect(errors.join("\n")).toMatch(/alias/i);
  });

  it("skips empty documents and locates each document", () => {
    const r = parsePolicyDocuments(`---\n# nothing\n---\n${HEAD}---\n`, "p.yaml");
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.documents.map((d) => d.source)).toEqual([{ file: "p.yaml", line: 4, column: 1 }]);
  });

  it("duplicate names across files name both places", () => {
    const a = parsePolicyDocuments(HEAD, "a.yaml");
    const b = parsePolicyDocuments(`# comment\n${HEAD}`, "b.yaml");
    if (!a.ok || !b.ok) throw new Error("fixtures must parse");
    const errors = checkPolicySet([...a.documents, ...b.documents]).map(formatPolicyError);
    expect(errors).toEqual(['b.yaml:2:1: metadata.name: name "p" is already used at a.yaml:1:1']);
    expect(() => compilePolicySet([...a.documents, ...b.documents].map((d) => d.document))).toThrow(
      PolicySetError,
    );
  });

  it("validates plain objects without positions", () => {
    const r = validatePolicyDocument(
      { apiVersion: "sigil.dev/v1", kind: "AuthorizationPolicy", metadata: { name: "x" }, spec: {} },
      "api",
    );
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.errors.map(formatPolicyError)).toEqual(["api: spec.selector: required field is missing"]);
  });

  it("stringified documents parse back to the same documents", () => {
    const text = `${HEAD}  ingress:
    - action: allow
      from: [ { matchLabels: { app: web, "k8s.ns": prod } }, { cidrs: ["198.18.0.0/24"] } ]
      ports: [8080]
      http: { methods: [GET], paths: ["/api/**"], headers: [ { name: x-a, present: false } ] }
  egress: []
---
apiVersion: sigil.dev/v1
kind: PeerAuthentication
metadata: { name: m }
spec: { selector: {}, mode: STRICT, portLevel: { "9090": PERMISSIVE } }
`;
    const first = parsePolicyDocuments(text, "x.yaml");
    if (!first.ok) throw new Error(first.errors.map(formatPolicyError).join("\n"));
    const docs = first.documents.map((d) => d.document);
    const again = parsePolicyDocuments(stringifyPolicyDocuments(docs), "y.yaml");
    expect(again.ok && again.documents.map((d) => d.document)).toEqual(docs);
  });
});
