/**
 * The relay builds the header object policy reads from a decoded block itself; the session-based
 * proxy gets it from node:http2. Both must decide alike, so a real node:http2 server is the oracle:
 * random blocks with repeated, single-value, cookie and set-cookie fields go to it over the wire and
 * the object it hands its handler must equal `headerObject` of the same fields.
 */
import fc from "fast-check";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { FrameType } from "../../sidecar/http/http2/frames/frame.ts";
import { headerObject } from "../../sidecar/http/http2/relay/fields.ts";
import { RawH2Client } from "../support/raw-h2.ts";

let server: http2.Http2Server;
let client: RawH2Client;
let nextStream = 1;

beforeAll(async () => {
  server = http2.createServer((req, res) => res.end(JSON.stringify(req.headers)));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  client = await RawH2Client.connect((server.address() as AddressInfo).port);
});

afterAll(async () => {
  client?.close();
  await new Promise((resolve) => server?.close(resolve));
});

const NAMES = ["x-a", "x-b", "cookie", "set-cookie", "content-type", "authorization", "user-agent", "accept"];
const field = fc.tuple(fc.constantFrom(...NAMES), fc.stringMatching(/^[a-z0-9=;,/]{1,8}$/));

it("builds the same header object node:http2 gives a handler", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(field, { minLength: 0, maxLength: 12 }), async (pairs) => {
      const id = nextStream;
      nextStream += 2;
      const fields = [":method", "GET", ":scheme", "http", ":path", "/", ":authority", "app.test"];
      for (const [name, value] of pairs) fields.push(name, value);
      client.write(client.headers(id, fields, 0x5));
      const body = await client.next((e) => e.streamId === id && e.type === FrameType.DATA && !!e.text);
      expect(JSON.parse(body.text as string)).toEqual({ ...headerObject(fields) });
    }),
    { numRuns: 60 },
  );
});
