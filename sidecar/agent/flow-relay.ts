import type { FlowRecord } from "../../core/flow.ts";
import type { FlowSink } from "../inputs/sources.ts";

/**
 * The data path needs its flow sink before it starts, the reporter needs the data path's metrics
 * registry: this relay holds the few records decided in between and hands them over on attach.
 */
export class FlowRelay implements FlowSink {
  private target: FlowSink | null = null;
  private held: FlowRecord[] = [];

  report(record: FlowRecord): void {
    if (this.target) this.target.report(record);
    else this.held.push(record);
  }

  attach(target: FlowSink): void {
    this.target = target;
    const held = this.held;
    this.held = [];
    for (const r of held) target.report(r);
  }
}
