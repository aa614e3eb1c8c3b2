import { sendJson, type Router } from "../http/router.ts";
import type { XdsService } from "./service.ts";

/**
 * GET /api/xds/streams — every connected xDS stream: node, protocol, and per type what it is
 * subscribed to, how many resources it was sent, and whether it ACKed or NACKed (with the error).
 */
export function registerXdsRoutes(router: Router, xds: XdsService): void {
  router.add("GET", "/api/xds/streams", (_req, res) => {
    const streams = xds.ads.status().sort((a, b) => (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
    sendJson(res, 200, { streams });
  });
}
