import { versionOf } from "./snapshot.ts";

/**
 * Distinct resource types a stream may ask for that the server does not serve. A real Envoy asks
 * for a handful at most (Secret, Runtime, ScopedRouteConfiguration, ...); the bound keeps a client
 * from making a stream hold state for any number of invented type URLs.
 */
export const MAX_UNSERVED_TYPES = 16;

/** Longer than any real type URL by far: an unserved type URL is kept per stream, so it is bounded too. */
export const MAX_TYPE_URL_LENGTH = 256;

/**
 * The version of "no resources": what an unserved type is answered with, the same version a
 * served type reports when the node holds none of it.
 */
export const NOTHING_VERSION = versionOf([]);

/** The one logging call the server makes (a pino logger fits). */
export interface XdsWarnLog {
  warn(fields: Record<string, unknown>, message: string): void;
}

/** Without a logger, warnings still reach an operator: as Node process warnings on stderr. */
export const warnOnStderr: XdsWarnLog = {
  warn: (fields, message) => process.emitWarning(`${message} ${JSON.stringify(fields)}`, "SigilXdsWarning"),
};
