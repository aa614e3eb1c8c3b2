import { describe, expect, it } from "vitest";
import { AgentOptionsError, parseAgentOptions } from "../../sidecar/agent/options.ts";

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
});
