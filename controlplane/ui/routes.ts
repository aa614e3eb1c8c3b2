import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import type { Router } from "../http/router.ts";

/**
 * The web UI: a static page, its script and stylesheet, and the cytoscape graph-layout library
 * from node_modules. Files are read once, on first request. They are public (the shell holds no
 * data); the page signs in through /api/session and talks to /api only.
 */

const STATIC_DIR = fileURLToPath(new URL("./static/", import.meta.url));
const require = createRequire(import.meta.url);

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

interface Asset {
  readonly path: string;
  readonly type: string;
}

/** The page's ES modules (app.js imports the others), each one job. */
const MODULES = [
  "app",
  "api",
  "details",
  "dom",
  "flows",
  "graph",
  "graph-labels",
  "graph-style",
  "panels",
  "partial",
  "state",
  "suggest",
];

const ASSETS: Record<string, Asset> = {
  "/": { path: `${STATIC_DIR}index.html`, type: "text/html; charset=utf-8" },
  ...Object.fromEntries(
    MODULES.map((m) => [
      `/ui/${m}.js`,
      { path: `${STATIC_DIR}${m}.js`, type: "text/javascript; charset=utf-8" },
    ]),
  ),
  "/ui/style.css": { path: `${STATIC_DIR}style.css`, type: "text/css; charset=utf-8" },
  "/ui/vendor/cytoscape.min.js": {
    path: require.resolve("cytoscape/dist/cytoscape.min.js"),
    type: "text/javascript; charset=utf-8",
  },
};

export function registerUiRoutes(router: Router): void {
  const cache = new Map<string, Promise<Buffer>>();
  for (const [route, asset] of Object.entries(ASSETS)) {
    router.addPublic("GET", route, async (_req, res) => {
      let body = cache.get(route);
      if (!body) {
        body = readFile(asset.path);
        cache.set(route, body);
        body.catch(() => cache.delete(route));
      }
      const data = await body;
      res.writeHead(200, {
        ...SECURITY_HEADERS,
        "content-type": asset.type,
        "content-length": data.length,
        "cache-control": "no-cache",
      });
      res.end(data);
    });
  }
}
