/**
 * GET and HEAD define no request body (RFC 9110 §9.3.1-2), and applications commonly frame them
 * without reading one: such a server takes the bytes of a body as the start of the next request,
 * which no sidecar decided. A sidecar therefore refuses these bodies unless the workload said its
 * application reads them (`bodiesOnGetHead: "forward"`).
 */

export type BodiesOnGetHead = "refuse" | "forward";

const BODILESS = new Set(["GET", "HEAD"]);

/** Whether `method` is one whose body the sidecar refuses under `setting`. */
export function refusesBody(method: string, setting: BodiesOnGetHead): boolean {
  return setting === "refuse" && BODILESS.has(method);
}

/** The reason given (400 body and flow record) for refusing a body on `method`. */
export function bodyRefusal(method: string, framing: string): string {
  return `${method} request with a body (${framing}): refused, an application that does not read it would take it for another request; set bodiesOnGetHead: forward if the application reads GET/HEAD bodies`;
}
