/**
 * The one backend every path ends at: an HTTP/1.1 server and a gRPC server (real @grpc/grpc-js,
 * unary method /bench.Echo/Unary), both answering every request with a 1 KB body.
 *
 *   tsx bench/compare/backend.ts <http1Port> <grpcPort>
 */
import http from "node:http";
import net from "node:net";
import * as grpc from "@grpc/grpc-js";
import { BODY_BYTES, GRPC_METHOD, HTTP_PATH } from "./workload.ts";

const [http1Port, grpcPort] = process.argv.slice(2).map(Number);
if (!http1Port || !grpcPort) {
  console.error("usage: backend.ts <http1Port> <grpcPort>");
  process.exit(2);
}

const body = Buffer.alloc(BODY_BYTES, "b");

const server = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0 }, (req, res) => {
  let received = 0;
  req.on("data", (chunk: Buffer) => {
    received += chunk.length;
  });
  req.on("end", () => {
    if (req.url !== HTTP_PATH || req.method !== "POST" || received !== BODY_BYTES) {
      res.writeHead(400, { "content-type": "text/plain" });
      res.end(`unexpected ${req.method ?? ""} ${req.url ?? ""} with ${received} bytes\n`);
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": BODY_BYTES });
    res.end(body);
  });
});
server.headersTimeout = 0;
server.listen(http1Port, "127.0.0.1");

const passthrough = {
  serialize: (b: Buffer): Buffer => b,
  deserialize: (b: Buffer): Buffer => b,
};
const grpcServer = new grpc.Server();
grpcServer.addService(
  {
    Unary: {
      path: GRPC_METHOD,
      requestStream: false,
      responseStream: false,
      requestSerialize: passthrough.serialize,
      requestDeserialize: passthrough.deserialize,
      responseSerialize: passthrough.serialize,
      responseDeserialize: passthrough.deserialize,
    },
  },
  {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      if (call.request.length !== BODY_BYTES) {
        callback({
          code: grpc.status.INVALID_ARGUMENT,
          details: `expected ${BODY_BYTES} bytes, got ${call.request.length}`,
        });
        return;
      }
      callback(null, body);
    },
  },
);
// grpc-js leaves Nagle on for the sockets it accepts; answers to concurrent calls would then wait
// for the client's delayed ACKs. Accept here with TCP_NODELAY and hand each socket to grpc-js.
const injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());
net
  .createServer({ noDelay: true }, (socket) => injector.injectConnection(socket))
  .listen(grpcPort, "127.0.0.1");
