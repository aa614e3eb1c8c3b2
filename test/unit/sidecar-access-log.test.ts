import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger } from "../../core/logger.ts";
import { AccessLog, parseAccessLogSpec } from "../../sidecar/authz/access-log.ts";
import { tlsFailureReason } from "../../sidecar/tls/failure-reason.ts";

/** Access-log lines per port (all, denied, off) with sampling, and the TLS failure reason codes. */

function capture(): { lines: Record<string, unknown>[]; log: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split("\n"))
        if (l !== "") lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { lines, log: createLogger("test", { destination: sink }) };
}

const entry = (port: number, verdict: "allow" | "deny", wouldDeny = false) => ({
  port,
  verdict,
  wouldDeny,
  fields: () => ({ port, verdict }),
});

describe("access log", () => {
  it("parses the flag and names what it cannot read", () => {
    expect(parseAccessLogSpec("8080=all:0.1, 9090=off,7000=denied")).toEqual([
      { port: 8080, log: "all", sample: 0.1 },
      { port: 9090, log: "off", sample: 1 },
      { port: 7000, log: "denied", sample: 1 },
    ]);
    expect(() => parseAccessLogSpec("8080=loud")).toThrow(/--access-log: "8080=loud": not a port rule/);
    expect(() => parseAccessLogSpec("8080=all:2")).toThrow(/the share is not a number from 0 to 1/);
    expect(() => parseAccessLogSpec("70000=off")).toThrow(/port out of range/);
  });

  it("logs denials by default, everything on an `all` port, nothing on an `off` port", () => {
    const { lines, log } = capture();
    const access = new AccessLog(parseAccessLogSpec("8080=all,9090=off"), log);
    access.write(entry(7000, "allow"));
    access.write(entry(7000, "deny"));
    access.write(entry(7000, "allow", true));
    access.write(entry(8080, "allow"));
    access.write(entry(9090, "deny"));
    expect(lines.map((l) => [l.port, l.msg, l.level, l.access])).toEqual([
      [7000, "denied", "info", true],
      [7000, "would deny (observe mode)", "info", true],
      [8080, "allowed", "info", true],
    ]);
  });

  it("keeps the sampled share, decided by the random source it is given", () => {
    const { lines, log } = capture();
    const draws = [0.05, 0.5, 0.09, 0.1, 0.99];
    let i = 0;
    const access = new AccessLog(parseAccessLogSpec("8080=all:0.1"), log, () => draws[i++] as number);
    for (let n = 0; n < draws.length; n++) access.write(entry(8080, n % 2 === 0 ? "allow" : "deny"));
    // Kept: the draws below 0.1 (the first and third).
    expect(lines.map((l) => l.verdict)).toEqual(["allow", "allow"]);
    expect(i).toBe(5);
  });
});

describe("TLS failure reason codes", () => {
  it("turn OpenSSL and Node error codes into stable dashed codes", () => {
    const err = (code?: string): Error =>
      Object.assign(new Error("error:0A000418:SSL routines::x"), { code });
    expect(tlsFailureReason(err("ERR_SSL_TLSV1_ALERT_UNKNOWN_CA"))).toBe("tls-tlsv1-alert-unknown-ca");
    expect(tlsFailureReason(err("ERR_SSL_WRONG_VERSION_NUMBER"))).toBe("tls-wrong-version-number");
    expect(tlsFailureReason(err("ERR_TLS_CERT_ALTNAME_INVALID"))).toBe("tls-cert-altname-invalid");
    expect(tlsFailureReason(err("ECONNRESET"))).toBe("connection-reset");
    expect(tlsFailureReason(err())).toBe("tls-error");
    expect(tlsFailureReason(err("not a code"))).toBe("tls-error");
    expect(tlsFailureReason(null)).toBe("tls-error");
  });
});
