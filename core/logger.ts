import { hostname } from "node:os";
import pino from "pino";
import type { DestinationStream, Logger } from "pino";

/**
 * Every Sigil process's logger: one JSON object per line with stable keys — `level` as its label
 * ("info", not 30), `time` as ISO 8601, `pid`, `hostname`, `name` (the component), `msg` — so a log
 * pipeline parses every line of every stream without a grammar per component. Fields a call adds
 * never reuse those keys.
 */

export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface LoggerSettings {
  readonly level?: string;
  /** Fields on every line (a worker's id). */
  readonly base?: Readonly<Record<string, unknown>>;
  /** Where lines go: a file descriptor (default 2, stderr) or a stream. */
  readonly destination?: number | DestinationStream;
}

export function createLogger(name: string, settings: LoggerSettings = {}): Logger {
  const destination = settings.destination ?? 2;
  return pino(
    {
      name,
      level: settings.level ?? "info",
      base: { pid: process.pid, hostname: hostname(), ...settings.base },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    typeof destination === "number" ? pino.destination(destination) : destination,
  );
}

/**
 * The line a long-running process prints on stdout once it serves: a JSON log line with
 * `event: "ready"`, printed whatever the log level, so a supervisor or a test waits for it the
 * same way for every component.
 */
export function announceReady(name: string, fields: Readonly<Record<string, unknown>>, msg: string): void {
  createLogger(name, { destination: 1 }).info({ event: "ready", ...fields }, msg);
}

/** The fields of a ready line (see `announceReady`), or null for any other line. */
export function readyEvent(line: string): Record<string, unknown> | null {
  if (!line.startsWith("{")) return null;
  try {
    const parsed = JSON.parse(line) as unknown;
    if (typeof parsed === "object" && parsed !== null && (parsed as { event?: unknown }).event === "ready")
      return parsed as Record<string, unknown>;
  } catch {
    return null;
  }
  return null;
}

/**
 * Node's own process messages as log lines: warnings (printed as plain text by default) and a
 * crash (an uncaught exception or unhandled rejection, printed as a bare stack) become JSON lines
 * on the same logger; a crash still ends the process with status 1.
 */
export function logProcessFaults(log: Logger): void {
  process.removeAllListeners("warning");
  process.on("warning", (w) => log.warn({ warning: w.name, code: (w as { code?: string }).code }, w.message));
  const crash = (err: unknown, kind: string): void => {
    log.fatal({ err, kind }, "process crashed");
    log.flush();
    process.exit(1);
  };
  process.on("uncaughtException", (err) => crash(err, "uncaught-exception"));
  process.on("unhandledRejection", (err) => crash(err, "unhandled-rejection"));
}
