/**
 * An ordinary gRPC client (plaintext, like any in-cluster client): calls Orders.GetOrder once and
 * prints one JSON line with the outcome. Usage: grpc-client.ts <host:port> <order id>
 */
import { credentials, type CallOptions, type Client, type ServiceError } from "@grpc/grpc-js";
import { loadOrdersService, type Order } from "./orders-proto.ts";

const [target, id] = process.argv.slice(2);
if (target === undefined || id === undefined) {
  process.stderr.write("usage: grpc-client.ts <host:port> <order id>\n");
  process.exit(2);
}

/** The generated client's one method, as the proto declares it. */
interface OrdersClient extends Client {
  GetOrder(
    request: { id: string },
    options: CallOptions,
    callback: (error: ServiceError | null, order?: Order) => void,
  ): void;
}

const Orders = loadOrdersService();
const client = new Orders(target, credentials.createInsecure()) as unknown as OrdersClient;
const deadline = new Date(Date.now() + 5_000);
client.GetOrder({ id }, { deadline }, (error: ServiceError | null, order?: Order) => {
  const outcome = error
    ? { ok: false, code: error.code, details: error.details }
    : { ok: true, code: 0, order };
  process.stdout.write(`${JSON.stringify(outcome)}\n`);
  client.close();
});
