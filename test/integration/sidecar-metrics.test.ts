import { spawnSync } from "node:child_process";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { App, HttpApp } from "../support/sidecar-apps.ts";
import {
  EchoClient,
  RawHttpConnection,
  startGrpcApp,
  startHttpApp,
  startTcpApp,
} from "../support/sidecar-apps.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * A scrape of two real sidecars carrying HTTP, gRPC and TCP traffic over mTLS, checked by
 * Prometheus's own linter (`promtool check metrics`) and read for the mesh's standard families.
 */

let app: HttpApp;
let tcp: App;
let grpcApp: { port: number; close(): Promise<void> };
let pair: SidecarPair;

const POLICY_B = (ports: { http: number; tcp: number; grpc: number }): string => `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: api }
spec:
  selector: { matchLabels: { app: api } }
  ingress:
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${ports.http} ]
      http: { paths: [ "/ok" ] }
    - action: allow
      from: [ { matchLabels: { app: web } } ]
      ports: [ ${ports.tcp}, ${ports.grpc} ]
`;

beforeAll(async () => {
  app = await startHttpApp();
  tcp = await startTcpApp("echo");
  grpcApp = await startGrpcApp();
  pair = await startPair({
    appPorts: [app.port, tcp.port, grpcApp.port],
    protocols: { [grpcApp.port]: "h2", [tcp.port]: "tcp" },
    policyB: POLICY_B({ http: app.port, tcp: tcp.port, grpc: grpcApp.port }),
    // Not the default address: the admin listener's host is a setting.
    configB: { admin: { host: "127.0.0.2", port: 0 } },
  });
  const conn = await RawHttpConnection.open(pair.outboundPort(app.port));
  try {
    expect((await conn.request("GET /ok HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(200);
    expect((await conn.request("GET /no HTTP/1.1\r\nHost: api\r\n\r\n")).status).toBe(403);
  } finally {
    conn.close();
  }
  const client = new EchoClient(
    `127.0.0.1:${pair.outboundPort(grpcApp.port)}`,
    grpc.credentials.createInsecure(),
  );
  try {
    const call = (method: "Unary" | "Fail"): Promise<number> =>
      new Promise((resolve) => {
        client.makeUnaryRequest(
          `/sigil.test.Echo/${method}`,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from("hi"),
          (err) => resolve(err?.code ?? 0),
        );
      });
    expect(await call("Unary")).toBe(0);
    expect(await call("Fail")).toBe(grpc.status.NOT_FOUND);
  } finally {
    client.close();
  }
  const reply = await tcpExchange(pair.outboundPort(tcp.port), "hello");
  expect(reply).toBe("got 5 bytes: hello");
});

afterAll(async () => {
  await pair?.close();
  await app?.close();
  await tcp?.close();
  await grpcApp?.close();
});

async function tcpExchange(port: number, text: string): Promise<string> {
  const net = await import("node:net");
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: "127.0.0.1", allowHalfOpen: true });
    let got = "";
    s.on("data", (d: Buffer) => (got += d.toString()));
    s.on("error", reject);
    s.on("end", () => {
      s.end();
      resolve(got);
    });
    s.on("connect", () => s.end(text));
  });
}

async function scrape(side: "a" | "b"): Promise<string> {
  const admin = pair[side].sidecar.admin;
  const res = await fetch(`http://${admin.address}:${admin.port}/stats/prometheus`);
  expect(res.status).toBe(200);
  return res.text();
}

/** Waits (bounded) for the TCP connection's close to be recorded: its end is after the reply. */
async function scrapeUntil(side: "a" | "b", pattern: RegExp): Promise<string> {
  for (let i = 0; i < 100; i++) {
    const text = await scrape(side);
    if (pattern.test(text)) return text;
    await new Promise((r) => setImmediate(r));
  }
  return scrape(side);
}

describe("sidecar metrics under real traffic", () => {
  it("pass promtool check metrics on both sidecars", async () => {
    for (const side of ["a", "b"] as const) {
      const text = await scrape(side);
      const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
      expect(check.error).toBeUndefined();
      expect({ side, status: check.status, problems: check.stdout + check.stderr }).toEqual({
        side,
        status: 0,
        problems: "",
      });
    }
  });

  it("listen on the configured admin host", () => {
    expect(pair.b.sidecar.admin.address).toBe("127.0.0.2");
  });

  it("label requests from both reporters with workloads, principals, codes, policy and mTLS", async () => {
    const b = await scrape("b");
    const web = `source_principal="${pair.pki.spiffeId("web")}"`;
    const api = `destination_principal="${pair.pki.spiffeId("api")}"`;
    const line = (text: string, ...parts: string[]): string | undefined =>
      text
        .split("\n")
        .find((l) => l.startsWith("sigil_requests_total{") && parts.every((p) => l.includes(p)));
    expect(
      line(
        b,
        'reporter="destination"',
        web,
        api,
        'response_code="200"',
        'request_protocol="http"',
        'policy="api/ingress/0"',
        'connection_security_policy="mutual_tls"',
      ),
    ).toMatch(/ 1$/);
    expect(
      line(b, 'reporter="destination"', 'response_code="403"', 'verdict="deny"', 'policy="none"'),
    ).toMatch(/ 1$/);
    expect(line(b, 'request_protocol="grpc"', 'grpc_response_status="0"', 'policy="api/ingress/1"')).toMatch(
      / 1$/,
    );
    expect(line(b, 'request_protocol="grpc"', 'grpc_response_status="5"')).toMatch(/ 1$/);
    const a = await scrape("a");
    expect(
      line(
        a,
        'reporter="source"',
        'source_workload="web"',
        'destination_workload="api"',
        'response_code="200"',
      ),
    ).toBeDefined();
    expect(a).toMatch(/sigil_request_duration_seconds_bucket\{reporter="source",[^}]*le="\+Inf"\} [1-9]/);
    expect(b).toMatch(/sigil_response_bytes_count\{reporter="destination",[^}]*\} [1-9]/);
  });

  it("count the TCP connection opened and closed with its bytes", async () => {
    const b = await scrapeUntil("b", /sigil_tcp_connections_closed_total\{[^}]*\} 1/);
    expect(b).toMatch(
      /sigil_tcp_connections_opened_total\{reporter="destination",source_workload="web",[^}]*request_protocol="tcp",connection_security_policy="mutual_tls",policy="api\/ingress\/1",verdict="allow"\} 1/,
    );
    expect(b).toMatch(/sigil_tcp_connections_closed_total\{[^}]*\} 1/);
    expect(b).toMatch(/sigil_tcp_received_bytes_total\{[^}]*\} 5\n/);
    expect(b).toMatch(/sigil_tcp_sent_bytes_total\{[^}]*\} 18\n/);
  });

  it("export the process and Node defaults beside them", async () => {
    const b = await scrape("b");
    expect(b).toMatch(/^process_cpu_seconds_total \d/m);
    expect(b).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
  });
});
