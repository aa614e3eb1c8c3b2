import { sendJson, type Router } from "../http/router.ts";
import type { MeshPublisher } from "./mesh.ts";

/**
 * GET /api/mesh/address-conflicts — every registered address (or address:port) the control plane
 * did not publish for the workload that claimed it: who claimed it, who keeps it (null: nobody)
 * and why. A claim refused here is what would otherwise have made sidecars see two owners, or an
 * address outside the mesh taken for a workload.
 */
export function registerMeshRoutes(router: Router, mesh: MeshPublisher): void {
  router.add("GET", "/api/mesh/address-conflicts", (_req, res) => {
    sendJson(res, 200, { conflicts: mesh.conflicts() });
  });
}
