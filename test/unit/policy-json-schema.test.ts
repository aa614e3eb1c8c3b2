import { existsSync, readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import Ajv from "ajv";
import { describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { SCHEMA_FILES, policyJsonSchemas } from "../../core/policy/json-schema.ts";
import { parsePolicyDocuments } from "../../core/policy/index.ts";

/**
 * The published JSON Schemas (schemas/): the committed files are what the generator makes from the
 * zod schemas, every example policy validates against them with a JSON Schema validator, and a
 * broken policy is refused at the field at fault.
 */

const ROOT = path.join(import.meta.dirname, "../..");
const SCHEMAS = path.join(ROOT, "schemas");
const EXAMPLE_DIRS = ["examples/policies", "examples/user-access", "examples/demo/policies"];

const examples = EXAMPLE_DIRS.flatMap((dir) =>
  readdirSync(path.join(ROOT, dir))
    .filter((f) => f.endsWith(".yaml"))
    .map((f) => path.join(ROOT, dir, f))
    .filter((f) => /^kind: (AuthorizationPolicy|PeerAuthentication)$/m.test(readFileSync(f, "utf8"))),
);

function committed(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(SCHEMAS, file), "utf8")) as Record<string, unknown>;
}

function validator(file: string): (doc: unknown) => string[] {
  const validate = new Ajv({ allErrors: true }).compile(committed(file));
  return (doc) =>
    validate(doc) ? [] : (validate.errors ?? []).map((e) => `${e.dataPath || "/"} ${e.message ?? ""}`);
}

function documents(file: string): unknown[] {
  return parseAllDocuments(readFileSync(file, "utf8")).map((d) => d.toJS() as unknown);
}

describe("policy JSON Schemas", () => {
  it("are committed exactly as scripts/generate-schemas.ts writes them", () => {
    const generated = policyJsonSchemas();
    expect(Object.keys(generated).sort()).toEqual(Object.values(SCHEMA_FILES).sort());
    for (const [file, schema] of Object.entries(generated))
      expect(committed(file), file).toStrictEqual(schema);
  });

  it("validate every example policy, document by document, by kind and as any policy", () => {
    expect(examples.length).toBeGreaterThanOrEqual(6);
    const any = validator(SCHEMA_FILES.any);
    const byKind = {
      AuthorizationPolicy: validator(SCHEMA_FILES.AuthorizationPolicy),
      PeerAuthentication: validator(SCHEMA_FILES.PeerAuthentication),
    };
    for (const file of examples) {
      // The store accepts them too: the schemas describe what Sigil loads.
      expect(parsePolicyDocuments(readFileSync(file, "utf8"), file), file).toMatchObject({ ok: true });
      for (const doc of documents(file)) {
        expect(any(doc), file).toEqual([]);
        const kind = (doc as { kind: keyof typeof byKind }).kind;
        expect(byKind[kind](doc), file).toEqual([]);
      }
    }
  });

  it("are named by a yaml-language-server line at the top of every example policy", () => {
    for (const file of examples) {
      const first = readFileSync(file, "utf8").split("\n")[0] ?? "";
      const m = /^# yaml-language-server: \$schema=(\S+)$/.exec(first);
      expect(m, file).not.toBeNull();
      expect(path.resolve(path.dirname(file), (m as RegExpExecArray)[1] as string)).toBe(
        path.join(SCHEMAS, SCHEMA_FILES.any),
      );
    }
  });

  it("refuse a broken policy at the field at fault", () => {
    const any = validator(SCHEMA_FILES.AuthorizationPolicy);
    const base = {
      apiVersion: "sigil.dev/v1",
      kind: "AuthorizationPolicy",
      metadata: { name: "api" },
      spec: { selector: { matchLabels: { app: "api" } }, ingress: [{ action: "allow", ports: [8080] }] },
    };
    expect(any(base)).toEqual([]);
    expect(any({ ...base, spec: { ...base.spec, ingress: [{ action: "permit" }] } })).toContain(
      ".spec.ingress[0].action should be equal to one of the allowed values",
    );
    expect(any({ ...base, spec: { ...base.spec, ingres: [] } })).toContain(
      ".spec should NOT have additional properties",
    );
    expect(any({ ...base, metadata: { name: "Not_A_Name" } })).toEqual([
      '.metadata.name should match pattern "^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"',
    ]);
    expect(any({ ...base, spec: { ingress: [] } })).toContain(
      ".spec should have required property 'selector'",
    );
    const peerAuth = validator(SCHEMA_FILES.PeerAuthentication);
    const strict = {
      apiVersion: "sigil.dev/v1",
      kind: "PeerAuthentication",
      metadata: { name: "strict" },
      spec: { selector: {}, mode: "STRICT", portLevel: { "9090": "PERMISSIVE" } },
    };
    expect(peerAuth(strict)).toEqual([]);
    expect(
      peerAuth({ ...strict, spec: { ...strict.spec, portLevel: { http: "PERMISSIVE" } } }).join("\n"),
    ).toMatch(/portLevel should match pattern/);
    // A document of another kind is no policy at all.
    expect(validator(SCHEMA_FILES.any)({ ...strict, kind: "Gateway" }).length).toBeGreaterThan(0);
    expect(existsSync(path.join(SCHEMAS, "README.md"))).toBe(true);
  });
});
