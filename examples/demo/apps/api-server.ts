/**
 * The api workload's application: an ordinary HTTP server on 8080 and a gRPC server on 50051, with no
 * knowledge of the mesh. It logs every request it actually receives, so the demo can tell a request the
 * sidecar let through from one it stopped. Usage: api-server.ts [httpPort] [grpcPort]
 */
import { createServer } from "node:http";
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { loadOrdersService, type Order } from "./orders-proto.ts";

const httpPort = Number(process.argv[2] ?? 8080);
const grpcPort = Number(process.argv[3] ?? 50051);

const orders: Order[] = [
  { id: "1001", item: "keyboard", quantity: 2 },
  { id: "1002", item: "monitor", quantity: 1 },
];

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

const http = createServer((req, res) => {
  say(`api http ${req.method} ${req.url}`);
  const reply = (status: number, body: unknown) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(`${JSON.stringify(body)}\n`);
  };
  if (req.url === "/api/orders" && req.method === "GET") return reply(200, { orders });
  if (req.url === "/api/orders" && req.method === "POST") {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => (body += chunk));
    req.on("end", () => reply(201, { created: true, received: body.length }));
    return;
  }
  // The application itself would happily serve this: only the mesh stands between it and a caller.
  if (req.url?.startsWith("/admin")) return reply(200, { admin: true, users: ["alice", "bob"] });
  reply(404, { error: "not found" });
});

const grpc = new Server();
grpc.addService(loadOrdersService().service, {
  GetOrder: (call: ServerUnaryCall<{ id: string }, Order>, callback: sendUnaryData<Order>) => {
    say(`api grpc GetOrder ${call.request.id}`);
    const order = orders.find((o) => o.id === call.request.id);
    if (order) callback(null, order);
    else callback({ code: 5, details: `no order ${call.request.id}` });
  },
});

http.listen(httpPort, "0.0.0.0", () => {
  grpc.bindAsync(`0.0.0.0:${grpcPort}`, ServerCredentials.createInsecure(), (error) => {
    if (error) {
      process.stderr.write(`api: cannot listen on ${grpcPort}: ${error.message}\n`);
      process.exit(1);
    }
    say(`api listening http=${httpPort} grpc=${grpcPort}`);
  });
});

const stop = () => {
  http.close();
  grpc.tryShutdown(() => process.exit(0));
};
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
