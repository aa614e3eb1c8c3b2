// A SPIFFE Workload API client built only from the published workload.proto with @grpc/grpc-js, as
// an application would build one; plain JavaScript so it runs as any user without a compile step.
// Usage: node workload-api-client.mjs <socket path>. Reads one JSON command per stdin line,
// {"id", "rpc", "request", "header"}, and writes one JSON line per response or stream message:
// {"id", "message"} (bytes as base64), then {"id", "end"} or {"id", "error": {code, details}}.
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const proto = fileURLToPath(new URL("../../core/proto/spiffe/workload/workload.proto", import.meta.url));
const definition = protoLoader.loadSync(proto, {
  keepCase: true,
  longs: String,
  defaults: true,
  bytes: String,
});
const { SpiffeWorkloadAPI } = grpc.loadPackageDefinition(definition);
const client = new SpiffeWorkloadAPI(`unix://${process.argv[2]}`, grpc.credentials.createInsecure());

const say = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const calls = new Map();

function run({ id, rpc, request, header }) {
  const metadata = new grpc.Metadata();
  if (header !== false) metadata.set("workload.spiffe.io", "true");
  const fail = (err) => say({ id, error: { code: err.code, details: err.details } });
  if (rpc === "FetchJWTSVID" || rpc === "ValidateJWTSVID") {
    client[rpc](request ?? {}, metadata, { deadline: Date.now() + 20_000 }, (err, message) =>
      err ? fail(err) : say({ id, message }),
    );
    return;
  }
  const stream = client[rpc](request ?? {}, metadata);
  calls.set(id, stream);
  stream.on("data", (message) => say({ id, message }));
  stream.on("error", (err) => {
    if (err.code !== grpc.status.CANCELLED) fail(err);
  });
  stream.on("end", () => say({ id, end: true }));
}

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.cancel) calls.get(command.cancel)?.cancel();
  else run(command);
});
process.stdin.on("end", () => {
  for (const call of calls.values()) call.cancel();
  client.close();
});
