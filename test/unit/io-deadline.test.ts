import { once } from "node:events";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ioDeadline } from "../../core/io-deadline.ts";
import { detectProtocol } from "../../sidecar/proxy/detect.ts";

/** Holds the event loop for `ms`, as a burst of handshakes on a loaded host does. */
function starveLoop(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // spin: the loop must not poll for I/O meanwhile
  }
}

describe("I/O deadlines on a starved event loop", () => {
  let server: net.Server;
  const accepted: net.Socket[] = [];
  beforeAll(async () => {
    server = net.createServer((s) => accepted.push(s));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
  });
  afterAll(async () => {
    for (const s of accepted) s.destroy();
    server.close();
    await once(server, "close");
  });

  it("does not time out detection when the client's bytes arrived before the deadline", async () => {
    const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
    const [socket] = (await once(server, "connection")) as [net.Socket];
    const detection = detectProtocol(socket, 20);
    await new Promise<void>((resolve) => client.write("GET /x HTTP/1.1\r\n", () => resolve()));
    // The request line is in the kernel's buffer; the deadline expires while the loop is held.
    starveLoop(100);
    expect((await detection).protocol).toEqual({ kind: "http1" });
    client.destroy();
  });

  it("still expires when nothing arrived", async () => {
    const client = net.connect((server.address() as AddressInfo).port, "127.0.0.1");
    const [socket] = (await once(server, "connection")) as [net.Socket];
    const detection = detectProtocol(socket, 20);
    starveLoop(100);
    expect((await detection).protocol).toEqual({ kind: "tcp", reason: "timeout" });
    client.destroy();
  });

  it("runs nothing once cancelled", async () => {
    let fired = 0;
    const deadline = ioDeadline(1, () => fired++);
    deadline.cancel();
    await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setImmediate(resolve));
    expect(fired).toBe(0);
  });
});
