/** Loads the demo's Orders service definition (orders.proto) for the server and the client. */
import { fileURLToPath } from "node:url";
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

export interface Order {
  id: string;
  item: string;
  quantity: number;
}

export function loadOrdersService(): ServiceClientConstructor {
  const definition = loadSync(fileURLToPath(new URL("./orders.proto", import.meta.url)), {
    keepCase: true,
    longs: Number,
    defaults: true,
  });
  const root = loadPackageDefinition(definition);
  const v1 = ((root.demo as GrpcObject).orders as GrpcObject).v1 as GrpcObject;
  return v1.Orders as ServiceClientConstructor;
}
