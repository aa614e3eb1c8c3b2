import { once } from "node:events";
import net from "node:net";
import type { Socket } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startRawUpstream } from "../support/raw-upstream.ts";
import type { RawUpstream } from "../support/raw-upstream.ts";
import type { SidecarPair } from "../support/sidecar-mesh.ts";
import { startPair } from "../support/sidecar-mesh.ts";

/**
 * An upstream that sends bytes after a complete response (a buggy or hostile server, or one that
 * desynchronized) must not have them read as the answer to the next request on the pooled
 * connection. A's egress to a scripted raw server: `/late` is answered, then an extra response
 * follows in a write of its own a little later; `/same-read` is answered with the extra response
 * right behind it in the same write. Every other path is answered with itself as the body.
 */

const INJECTED = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected";
/** How long after its real response `/late` sends the extra one: long enough for the pool to hold it idle. */
const LATE_MS = 30;

interface ScriptedServer {
  readonly upstream: RawUpstream;
  /** Resolves once the upstream connection that carried `path` is closed by the sidecar. */
  closedAfter(path: string): Promise<void>;
}

function answer(path: string): string {
  return `HTTP/1.1 200 OK\r\nContent-Length: ${path.length}\r\n\r\n${path}`;
}

async function startScriptedServer(): Promise<ScriptedServer> {
  const closedBy = new Map<string, Promise<void>>();
  const upstream = await startRawUpstream(({ path, socket, closed }) => {
    closedBy.set(path, closed);
    if (path === "/same-read") socket.write(answer(path) + INJECTED);
    else socket.write(answer(path));
    if (path === "/late") setTimeout(() => socket.writable && socket.write(INJECTED), LATE_MS);
  });
  return {
    upstream,
    closedAfter: (path) => {
      const closed = closedBy.get(path);
      if (closed === undefined) return Promise.reject(new Error(`${path} was never received`));
      return withTimeout(closed, 3000, `the upstream connection of ${path} stayed open`);
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(what)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

/** One keep-alive client connection that reads one complete Content-Length response at a time. */
class Client {
  private buf = "";
  private waiter: (() => void) | null = null;
  private constructor(private readonly socket: Socket) {
    socket.on("data", (c: Buffer) => {
      this.buf += c.toString("latin1");
      this.waiter?.();
    });
    socket.on("close", () => this.waiter?.());
  }

  static async open(port: number): Promise<Client> {
    const socket = net.connect(port, "127.0.0.1");
    await once(socket, "connect");
    return new Client(socket);
  }

  /** Sends GET `path` and returns the body of the response that comes back. */
  async get(path: string): Promise<string> {
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
    return withTimeout(this.response(), 3000, `no response to ${path}`);
  }

  private async response(): Promise<string> {
    for (;;) {
      const end = this.buf.indexOf("\r\n\r\n");
      const length = /content-length: *(\d+)/i.exec(this.buf.slice(0, Math.max(end, 0)));
      if (end >= 0 && length !== null && this.buf.length >= end + 4 + Number(length[1])) {
        const body = this.buf.slice(end + 4, end + 4 + Number(length[1]));
        this.buf = this.buf.slice(end + 4 + Number(length[1]));
        return body;
      }
      if (this.socket.destroyed) throw new Error(`connection closed; read ${JSON.stringify(this.buf)}`);
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
  }

  /** Bytes read beyond the responses asked for. */
  get unread(): string {
    return this.buf;
  }

  close(): void {
    this.socket.destroy();
  }
}

let scripted: ScriptedServer;
let pair: SidecarPair;

beforeAll(async () => {
  scripted = await startScriptedServer();
  pair = await startPair({
    appPorts: [],
    externalTargets: [{ host: "127.0.0.1", port: scripted.upstream.port }],
    policyA: `
apiVersion: sigil.dev/v1
kind: AuthorizationPolicy
metadata: { name: web-egress }
spec:
  selector: { matchLabels: { app: web } }
  egress:
    - action: allow
      to: [ { dnsNames: [ "localhost" ] } ]
`,
  });
});

afterAll(async () => {
  await pair?.close();
  await scripted?.upstream.close();
});

describe("HTTP/1.1 upstream pool: bytes after a response", () => {
  it("closes an idle pooled connection that receives bytes, and the next request gets its own response", async () => {
    const client = await Client.open(pair.externalPort(0));
    try {
      const before = scripted.upstream.connections;
      expect(await client.get("/late")).toBe("/late");
      await scripted.closedAfter("/late");
      expect(await client.get("/next-after-late")).toBe("/next-after-late");
      expect(await client.get("/again")).toBe("/again");
      expect(client.unread).toBe("");
      // The connection that sent the extra bytes was replaced by one fresh connection, then reused.
      expect(scripted.upstream.connections - before).toBe(2);
    } finally {
      client.close();
    }
  });

  it("never keeps a connection that sent more than the response in the same read", async () => {
    const client = await Client.open(pair.externalPort(0));
    try {
      expect(await client.get("/same-read")).toBe("/same-read");
      const after = scripted.upstream.connections;
      await scripted.closedAfter("/same-read");
      expect(await client.get("/next-after-same-read")).toBe("/next-after-same-read");
      expect(client.unread).toBe("");
      expect(scripted.upstream.connections - after).toBe(1);
    } finally {
      client.close();
    }
  });
});
