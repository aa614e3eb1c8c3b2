import { Metadata, status } from "@grpc/grpc-js";
import type * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { FlowRecord } from "../../core/flow.ts";
import type { ControlPlaneMetrics } from "../metrics/metrics.ts";
import { fromWireFlow, InvalidFlowError } from "../../core/flow-wire.ts";
import type { WireAck, WireBatch } from "../../core/flow-wire.ts";
import type { FlowStore } from "./store.ts";
import type { RevocableCertificate } from "../../core/svid/revocation.ts";
import { createLogger } from "../../core/logger.ts";

/** Batches of one stream waiting for the store before the stream stops being read. */
const MAX_PENDING_BATCHES = 4;

export interface FlowServiceDeps {
  readonly store: Pick<FlowStore, "append">;
  readonly metrics?: ControlPlaneMetrics;
  readonly logger?: Logger;
  /**
   * The SPIFFE ID the stream's peer proved with its client certificate and that certificate's
   * serial, or null when it presented none (refused with UNAUTHENTICATED); throwing refuses the
   * stream with PERMISSION_DENIED and the error's message (a certificate that fails verification, a
   * revoked workload or certificate). When given, records naming another reporter are rejected, so a
   * workload cannot report flows in another's name.
   */
  readonly authenticatePeer?: (
    call: grpc.ServerDuplexStream<WireBatch, WireAck>,
  ) => RevocableCertificate | null;
  /**
   * Called once a stream is authenticated with `credential`: `end(reason)` must be called when that
   * identity or certificate is revoked, which ends the stream with PERMISSION_DENIED and `reason`.
   * Returns the release, called when the stream closes.
   */
  readonly holdStream?: (credential: RevocableCertificate, end: (reason: string) => void) => () => void;
  /** Largest batch accepted (default 5,000 records). */
  readonly maxBatch?: number;
}

type Stream = grpc.ServerDuplexStream<WireBatch, WireAck>;

/**
 * Handlers for `sigil.v1.FlowService` (add with `server.addService(FlowServiceDefinition, ...)`).
 * Each batch is validated record by record, appended durably, and only then acknowledged, in order.
 */
export function flowServiceHandlers(deps: FlowServiceDeps): grpc.UntypedServiceImplementation {
  const log = deps.logger ?? createLogger("flow-service");
  const maxBatch = deps.maxBatch ?? 5000;
  return {
    StreamFlows(call: Stream): void {
      let credential: RevocableCertificate | null = null;
      if (deps.authenticatePeer) {
        try {
          credential = deps.authenticatePeer(call);
        } catch (err) {
          call.emit("error", {
            code: status.PERMISSION_DENIED,
            details: `flow stream refused: ${err instanceof Error ? err.message : String(err)}`,
          });
          return;
        }
        if (!credential) {
          call.emit("error", {
            code: status.UNAUTHENTICATED,
            details: "flow reports need a workload identity",
          });
          return;
        }
      }
      deps.metrics?.flowStreams.inc();
      // Headers right away tell the reporter the stream is up before the first ack.
      call.sendMetadata(new Metadata());
      let open = true;
      let queue: Promise<void> = Promise.resolve();
      let release = (): void => undefined;
      const finish = () => {
        if (!open) return;
        open = false;
        release();
        deps.metrics?.flowStreams.dec();
      };
      // Batches wait in order for the store; past a few, stop reading so a reporter faster than
      // the disk is slowed by HTTP/2 flow control instead of growing this queue without bound.
      let pending = 0;
      call.on("data", (batch: WireBatch) => {
        pending++;
        if (pending >= MAX_PENDING_BATCHES) call.pause();
        queue = queue
          .then(() => (open ? handleBatch(batch) : undefined))
          .finally(() => {
            pending--;
            if (pending < MAX_PENDING_BATCHES && call.isPaused()) call.resume();
          });
      });
      call.on("end", () => {
        void queue.then(() => {
          finish();
          call.end();
        });
      });
      call.on("error", finish);
      call.on("cancelled", finish);
      call.on("close", finish);
      const peerId = credential?.spiffeId ?? null;
      if (credential && deps.holdStream)
        release = deps.holdStream(credential, (reason) => fail(status.PERMISSION_DENIED, reason));

      async function handleBatch(batch: WireBatch): Promise<void> {
        const flows = Array.isArray(batch.flows) ? batch.flows : [];
        if (flows.length > maxBatch) {
          fail(
            status.INVALID_ARGUMENT,
            `batch ${batch.sequence} has ${flows.length} records, limit ${maxBatch}`,
          );
          return;
        }
        deps.metrics?.flowBatches.inc();
        const valid: FlowRecord[] = [];
        const errors: string[] = [];
        for (const raw of flows) {
          try {
            const record = fromWireFlow(raw);
            if (peerId && record.reporter.spiffeId !== peerId) {
              throw new InvalidFlowError(
                record.id,
                `reporter ${record.reporter.spiffeId} is not the peer ${peerId}`,
              );
            }
            valid.push(record);
          } catch (err) {
            errors.push(err instanceof Error ? err.message : String(err));
          }
        }
        if (errors.length > 0) {
          log.warn({ session: batch.session, sequence: batch.sequence, errors }, "rejected flow records");
        }
        let result;
        try {
          result = await deps.store.append(valid);
        } catch (err) {
          // Not acknowledged: the reporter keeps the batch and sends it again after reconnecting.
          log.error({ err, session: batch.session, sequence: batch.sequence }, "flow batch not stored");
          fail(status.UNAVAILABLE, `flow store: ${(err as Error).message}`);
          return;
        }
        const m = deps.metrics;
        if (m) {
          m.flowsIngested.inc({ result: "accepted" }, result.accepted.length);
          m.flowsIngested.inc({ result: "duplicate" }, result.duplicates);
          m.flowsIngested.inc({ result: "rejected" }, errors.length);
          const reporter = peerId ?? valid[0]?.reporter.spiffeId;
          if (reporter) m.flowsDroppedByReporters.set({ reporter }, Number(batch.droppedTotal) || 0);
        }
        if (!open) return;
        call.write({
          sequence: batch.sequence,
          accepted: result.accepted.length,
          duplicates: result.duplicates,
          rejected: errors.length,
          errors: errors.slice(0, 20),
        });
      }

      function fail(code: status, details: string): void {
        if (!open) return;
        finish();
        call.emit("error", { code, details });
      }
    },
  };
}
