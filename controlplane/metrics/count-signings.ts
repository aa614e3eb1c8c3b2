import type * as grpc from "@grpc/grpc-js";
import type { ControlPlaneMetrics } from "./metrics.ts";

/** Counts SVID signings (with the JWT-SVID issued with each) and Workload API JWT-SVIDs by result in the control plane's metrics. */
export function countSignings(
  handlers: grpc.UntypedServiceImplementation,
  metrics: ControlPlaneMetrics,
): grpc.UntypedServiceImplementation {
  const sign = handlers.SignSvid as (call: unknown, callback: grpc.sendUnaryData<unknown>) => void;
  const signJwt = handlers.SignJwtSvid as (call: unknown, callback: grpc.sendUnaryData<unknown>) => void;
  return {
    ...handlers,
    SignJwtSvid: (call: unknown, callback: grpc.sendUnaryData<unknown>) =>
      signJwt(call, (err, value) => {
        metrics.signings.inc({ kind: "jwt", result: err ? "refused" : "issued" });
        callback(err, value);
      }),
    SignSvid: (call: unknown, callback: grpc.sendUnaryData<unknown>) =>
      sign(call, (err, value) => {
        if (err) metrics.signings.inc({ kind: "x509", result: "refused" });
        else {
          metrics.signings.inc({ kind: "x509", result: "issued" });
          metrics.signings.inc({ kind: "jwt", result: "issued" });
        }
        callback(err, value);
      }),
  };
}
