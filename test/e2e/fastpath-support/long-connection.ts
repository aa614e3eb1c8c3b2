/**
 * Holds one TCP connection open to an echo server and round-trips a line each time stdin says
 * "ping", printing {"event":"pong","n":...} — used to show an established connection survives the
 * enforcer being killed. argv: <host> <port>
 */
import { createInterface } from "node:readline";
import { connect } from "node:net";

const [host, port] = process.argv.slice(2);
const sock = connect({ host: host as string, port: Number(port) });
let n = 0;
sock.on("connect", () => console.log(JSON.stringify({ event: "connected" })));
sock.on("error", (err) => console.log(JSON.stringify({ event: "error", message: err.message })));
createInterface({ input: sock }).on("line", (line) => console.log(JSON.stringify({ event: "pong", line })));
createInterface({ input: process.stdin }).on("line", () => sock.write(`ping ${++n}\n`));
