/**
 * Plain application servers for the fast-path suites, run inside the server namespace: an HTTP
 * server and a line-echo TCP server, both dual stack on fixed ports given in argv. They know nothing
 * of Sigil. Prints {"event":"ready"} once both listen, and one {"event":"accepted"} line per
 * connection so tests can tell whether a connection ever reached the application.
 *
 * argv: <httpPort> <echoPort>
 */
import { once } from "node:events";
import { createServer as createHttpServer } from "node:http";
import { createServer } from "node:net";

const [httpPort, echoPort] = process.argv.slice(2).map(Number);

const http = createHttpServer((req, res) => {
  res.end(`hello from the db workload: ${req.method} ${req.url}\n`);
});
http.on("connection", (s) =>
  console.log(JSON.stringify({ event: "accepted", server: "http", peer: s.remoteAddress })),
);
const echo = createServer((s) => {
  console.log(JSON.stringify({ event: "accepted", server: "echo", peer: s.remoteAddress }));
  s.on("error", () => undefined);
  s.pipe(s);
});
http.listen({ host: "::", port: httpPort, ipv6Only: false });
echo.listen({ host: "::", port: echoPort, ipv6Only: false });
await Promise.all([once(http, "listening"), once(echo, "listening")]);
console.log(JSON.stringify({ event: "ready" }));
