import type { Client } from "@grpc/grpc-js";
import type { Pool } from "undici";

/** The 1 KB body each bench request carries (both ways: the apps echo it). */
export const PAYLOAD = Buffer.alloc(1024, "y");

/** One HTTP/1.1 `POST /bench` with the payload; anything but a 200 is an error. */
export async function postBench(pool: Pool): Promise<void> {
  const res = await pool.request({
    method: "POST",
    path: "/bench",
    body: PAYLOAD,
    headers: { "content-length": "1024" },
  });
  await res.body.arrayBuffer();
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
}

/** One gRPC unary call of the echo service with the payload. */
export function unaryEcho(client: Client): Promise<void> {
  return new Promise<void>((resolve, reject) =>
    client.makeUnaryRequest(
      "/sigil.test.Echo/Unary",
      (b: Buffer) => b,
      (b: Buffer) => b,
      PAYLOAD,
      (err: Error | null) => (err ? reject(err) : resolve()),
    ),
  );
}
