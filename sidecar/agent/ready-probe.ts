import { request } from "node:http";

/**
 * The readiness probe of an injected sidecar, run inside its pod: the admin listener is loopback
 * only, so the kubelet asks this command instead of the port. Ready means `/ready` answered 200
 * within `timeoutMs`; anything else (refused, slow, 503 while draining) is not ready, with why.
 */
export function probeReady(
  adminPort: number,
  timeoutMs = 2_000,
): Promise<{ ready: boolean; detail: string }> {
  return new Promise((resolve) => {
    const req = request({ host: "127.0.0.1", port: adminPort, path: "/ready", timeout: timeoutMs }, (res) => {
      res.resume();
      const ready = res.statusCode === 200;
      resolve({ ready, detail: `admin /ready answered ${res.statusCode}` });
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err) =>
      resolve({ ready: false, detail: `admin 127.0.0.1:${adminPort}: ${err.message}` }),
    );
    req.end();
  });
}
