import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runSigil } from "../support/sigil-cli.ts";

/** `sigil policy import-networkpolicy` as an operator runs it: files, stdin, exit statuses, --strict. */

const EXACT = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: api, namespace: shop }
spec:
  podSelector: { matchLabels: { app: api } }
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{ podSelector: { matchLabels: { app: web } } }]
      ports: [{ port: 8080 }]
`;

const INEXACT = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: dns }
spec:
  podSelector: {}
  egress:
    - ports: [{ protocol: UDP, port: 53 }, { port: 53 }]
`;

describe("sigil policy import-networkpolicy", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sigil-netpol-"));
    await writeFile(join(dir, "api.yaml"), EXACT);
    await writeFile(join(dir, "dns.yml"), INEXACT);
    await writeFile(join(dir, "notes.txt"), "not read");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("stdin in, YAML out that `sigil policy validate` accepts; what is approximated on stderr", async () => {
    const out = await runSigil(["policy", "import-networkpolicy", "-f", "-", "-n", "team-a"], {
      stdin: `${EXACT}---\n${INEXACT}`,
    });
    expect(out.code).toBe(0);
    expect(out.stderr).toContain(
      "stdin document 2 (NetworkPolicy team-a/dns): spec.egress[0].ports[0]: approximated: UDP port 53 left out",
    );
    expect(out.stdout).toContain("name: netpol.team-a.dns");
    expect(out.stdout).toContain("# approximated: spec.egress[0].ports[0]: UDP port 53 left out");
    const validated = await runSigil(["policy", "validate", "-f", "-"], { stdin: out.stdout });
    expect(validated.stderr).toBe("");
    expect(validated.stdout).toBe("1 files valid: 2 policies\n");
    expect(validated.code).toBe(0);
  });

  it("--strict: exit 1 naming each inexact part and nothing on stdout; an exact input passes", async () => {
    const [inexact, exact] = await Promise.all([
      runSigil(["policy", "import-networkpolicy", "-f", dir, "--strict"]),
      runSigil(["policy", "import-networkpolicy", "-f", join(dir, "api.yaml"), "--strict", "-o", "json"]),
    ]);
    expect(inexact.code).toBe(1);
    expect(inexact.stdout).toBe("");
    expect(inexact.stderr).toContain("sigil: --strict: 1 parts cannot be expressed exactly");
    expect(inexact.stderr).toContain(
      `${join(dir, "dns.yml")} document 1 (NetworkPolicy default/dns): spec.egress[0].ports[0]`,
    );
    expect(exact.code).toBe(0);
    const json = JSON.parse(exact.stdout) as { policies: { policy: { metadata: { name: string } } }[] };
    expect(json.policies.map((p) => p.policy.metadata.name)).toEqual(["netpol.shop.api"]);
  });

  it("bad input exits 1 naming file, document and field; a bad flag exits 2", async () => {
    const [bad, format, missing] = await Promise.all([
      runSigil(["policy", "import-networkpolicy", "-f", "-"], {
        stdin: EXACT.replace("port: 8080", "port: 8080, endPort: 80"),
      }),
      runSigil(["policy", "import-networkpolicy", "-f", dir, "-o", "table"]),
      runSigil(["policy", "import-networkpolicy", "-f", join(dir, "absent.yaml")]),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe("");
    expect(bad.stderr).toBe(
      "sigil: stdin document 1 (NetworkPolicy shop/api): spec.ingress[0].ports[0].endPort: endPort 80 is below port 8080\n",
    );
    expect(format.code).toBe(2);
    expect(format.stderr).toMatch(/-o\/--output must be one of yaml, json/);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read .*absent\.yaml/);
  });
});
