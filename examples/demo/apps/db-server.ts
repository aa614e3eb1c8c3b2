/**
 * The db workload's application: a line-oriented TCP service on 5432 standing in for a database.
 * Each line is a query; each answer is one line. Usage: db-server.ts [port]
 */
import { createServer } from "node:net";
import { createInterface } from "node:readline";

const port = Number(process.argv[2] ?? 5432);

const server = createServer((socket) => {
  process.stdout.write(`db connection from ${socket.remoteAddress}\n`);
  socket.on("error", () => undefined);
  createInterface({ input: socket }).on("line", (query) => {
    process.stdout.write(`db query ${query}\n`);
    socket.write(`db: ok (${query.trim().length} bytes)\n`);
  });
});

server.listen(port, "0.0.0.0", () => process.stdout.write(`db listening tcp=${port}\n`));
server.on("error", (error) => {
  process.stderr.write(`db: ${error.message}\n`);
  process.exit(1);
});
process.once("SIGTERM", () => server.close(() => process.exit(0)));
