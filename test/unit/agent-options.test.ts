import { describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { AgentOptionsError, parseAgentOptions, readAgentConfigFile } from "../../sidecar/agent/options.ts";

const BASE = {
  controlPlane: "127.0.0.1:15010",
  controlPlaneCa: "/etc/sigil/ca.pem",
  joinToken: "token",
  workloadName: "api",
};

describe("sidecar agent options", () => {
  it("refuses a port both served as HTTP only and carried by the fast path, naming it", () => {
    expect(() => parseAgentOptions({ ...BASE, httpPorts: [8080, 5432], fastPathPorts: [5432] })).toThrow(
      /port 5432 is in both httpPorts .* and fastPathPorts/,
    );
    expect(() => parseAgentOptions({ ...BASE, httpPorts: [8080], fastPathPorts: [5432] })).not.toThrow();
  });

  it("reports the refusal as an options error", () => {
    expect(() => parseAgentOptions({ ...BASE, httpPorts: [80], fastPathPorts: [80] })).toThrow(
      AgentOptionsError,
    );
  });

  it("takes exactly one identity proof: a join token, its file, or a service-account token file", () => {
    const { joinToken: _, ...noProof } = BASE;
    expect(
      parseAgentOptions({ ...noProof, serviceAccountTokenFile: "/var/run/sigil/token/token" })
        .serviceAccountTokenFile,
    ).toBe("/var/run/sigil/token/token");
    expect(() => parseAgentOptions(noProof)).toThrow(/exactly one of joinToken/);
    expect(() => parseAgentOptions({ ...BASE, serviceAccountTokenFile: "/t" })).toThrow(
      /exactly one of joinToken/,
    );
  });

  it("--advertise-address auto stands for this host's own addresses, loopback left out", () => {
    const { advertiseAddress } = parseAgentOptions({ ...BASE, advertiseAddress: ["auto", "198.18.9.9"] });
    expect(advertiseAddress.at(-1)).toBe("198.18.9.9");
    expect(advertiseAddress).not.toContain("127.0.0.1");
    expect(advertiseAddress).not.toContain("auto");
  });

  it("takes a userAccess block, and refuses a user-access port the fast path would carry unparsed", () => {
    const userAccess = {
      ports: [8443],
      issuer: "https://idp.example",
      clientId: "web",
      redirectUri: "https://web.example/.sigil/callback",
      sessionKeyFile: "/etc/sigil/session.key",
    };
    expect(parseAgentOptions({ ...BASE, userAccess }).userAccess?.cookie.name).toBe("__Host-sigil-session");
    expect(() => parseAgentOptions({ ...BASE, userAccess, fastPathPorts: [8443] })).toThrow(
      /userAccess\.ports: port 8443 is a user-access port/,
    );
  });

  it("names the workload by its pid or by its attributes, never both, and its executable only with its user", () => {
    expect(parseAgentOptions({ ...BASE, workloadUid: "app", workloadExe: "/usr/bin/python3" })).toMatchObject(
      {
        workloadUid: "app",
        workloadExe: "/usr/bin/python3",
      },
    );
    expect(parseAgentOptions({ ...BASE, workloadUid: 2000 }).workloadUid).toBe(2000);
    expect(() => parseAgentOptions({ ...BASE, workloadPid: 42, workloadUid: 2000 })).toThrow(
      /workloadPid: name the workload by its pid or by its attributes/,
    );
    expect(() => parseAgentOptions({ ...BASE, workloadExe: "/usr/bin/python3" })).toThrow(
      /workloadExe: workloadExe needs workloadUid/,
    );
    expect(() => parseAgentOptions({ ...BASE, workloadUid: 2000, workloadExe: "python3" })).toThrow(
      /workloadExe: must be an absolute path/,
    );
    expect(() => parseAgentOptions({ ...BASE, workloadUid: "not a user" })).toThrow(
      /workloadUid: not a uid or user name/,
    );
  });

  it("serves the workload API only with the workload's uids, and never to the sidecar's own", () => {
    const socket = "/run/sigil/workload.sock";
    expect(parseAgentOptions({ ...BASE, workloadApiSocket: socket, workloadApiUid: [65534] })).toMatchObject({
      workloadApiSocket: socket,
      workloadApiUid: [65534],
    });
    expect(() => parseAgentOptions({ ...BASE, workloadApiSocket: socket })).toThrow(/workloadApiUid: .*uids/);
    expect(() => parseAgentOptions({ ...BASE, workloadApiUid: [65534] })).toThrow(/workloadApiSocket/);
    expect(() =>
      parseAgentOptions({ ...BASE, workloadApiSocket: "run/x.sock", workloadApiUid: [1] }),
    ).toThrow(/absolute path/);
    const own = process.getuid?.() ?? 0;
    expect(() => parseAgentOptions({ ...BASE, workloadApiSocket: socket, workloadApiUid: [own] })).toThrow(
      new RegExp(`uid ${own} is the sidecar's own`),
    );
  });

  it("reads the user-access example as it stands", async () => {
    const file = fileURLToPath(new URL("../../examples/user-access/sidecar.yaml", import.meta.url));
    const o = parseAgentOptions(await readAgentConfigFile(file), file);
    expect(o.userAccess).toMatchObject({
      ports: [8080],
      issuer: "https://sso.example.com/realms/example",
      cookie: { name: "__Host-sigil-session", secure: true, maxAgeSeconds: 28800 },
    });
    expect(o.userAccess?.bearer.trustedIssuers[0]?.audiences).toEqual(["payments-api"]);
  });
});
