/** The benchmark's applications in their own process: HTTP/1.1 and gRPC servers answering 1 KB. */
import http from "node:http";
import type { AddressInfo } from "node:net";
import * as grpc from "@grpc/grpc-js";
import { echoService } from "../../test/support/sidecar-apps.ts";

const BODY = Buffer.alloc(1024, "x");

const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": BODY.length });
    res.end(BODY);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(0, "127.0.0.1", () => {
  const grpcServer = new grpc.Server();
  grpcServer.addService(echoService, {
    unary: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, BODY),
    serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => call.end(),
    bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => call.end(),
    fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, BODY),
  });
  grpcServer.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, grpcPort) => {
    if (err) throw err;
    process.send?.({ http: (server.address() as AddressInfo).port, grpc: grpcPort });
  });
});
