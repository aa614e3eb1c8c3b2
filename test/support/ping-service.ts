import type * as grpc from "@grpc/grpc-js";

/** A one-method gRPC service with raw byte messages, for tests that only need a real call. */
export const PING_SERVICE: grpc.ServiceDefinition = {
  Ping: {
    path: "/sigil.test.Ping/Ping",
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
};
