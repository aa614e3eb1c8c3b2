/**
 * A sidecar with a user-access port in front of an HTTP app, signing people in at a real OpenID
 * provider (`oidc-provider.ts`) on loopback: the fixture both user-access suites share. The browser
 * reaches the sidecar as `http://localhost:<port>` (the provider is `http://127.0.0.1:<port>`, another
 * site); the sidecar's session clock is `clock.offsetMs` ahead of the system clock, set by the test.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Sidecar } from "../../sidecar/sidecar.ts";
import { startSidecar } from "../../sidecar/sidecar.ts";
import { CredentialHolder, PeerDirectoryHolder, PolicyHolder } from "../../sidecar/inputs/state.ts";
import type { TestProvider } from "./oidc-provider.ts";
import { startProvider } from "./oidc-provider.ts";
import type { HttpApp } from "./sidecar-apps.ts";
import { startHttpApp } from "./sidecar-apps.ts";
import { FlowCollector, MeshPki, TRUST_DOMAIN, policySet, quiet } from "./sidecar-mesh.ts";

/** The example's policy (examples/user-access/policy.yaml): what the README shows is what runs. */
const POLICY_FILE = fileURLToPath(new URL("../../examples/user-access/policy.yaml", import.meta.url));

export interface UserAccessLab {
  readonly provider: TestProvider;
  readonly app: HttpApp;
  readonly sidecar: Sidecar;
  readonly flows: FlowCollector;
  /** `http://localhost:<sidecar port>` */
  readonly origin: string;
  readonly sessionKeyFile: string;
  readonly clock: { offsetMs: number };
  close(): Promise<void>;
}

/** A free loopback port: the provider must know the callback URL before the sidecar listens. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export async function startUserAccessLab(): Promise<UserAccessLab> {
  const dir = await mkdtemp(join(tmpdir(), "sigil-user-access-"));
  const pki = await MeshPki.create();
  const port = await freePort();
  const origin = `http://localhost:${port}`;
  const provider = await startProvider({
    redirectUri: `${origin}/.sigil/callback`,
    postLogoutRedirectUri: `${origin}/`,
  });
  const sessionKeyFile = join(dir, "session.key");
  const secretFile = join(dir, "client.secret");
  await writeFile(sessionKeyFile, randomBytes(32).toString("base64"));
  await writeFile(secretFile, `${provider.clientSecret}\n`);
  const app = await startHttpApp();
  const flows = new FlowCollector();
  const clock = { offsetMs: 0 };
  const sidecar = await startSidecar({
    config: {
      mode: "explicit",
      admin: { port: 0 },
      logLevel: "silent",
      inbound: {
        host: "127.0.0.1",
        port,
        plaintextAppPort: app.port,
        userAccess: {
          ports: [app.port],
          issuer: provider.issuer,
          clientId: provider.clientId,
          clientSecretFile: secretFile,
          redirectUri: `${origin}/.sigil/callback`,
          scopes: ["openid", "email", "groups"],
          sessionKeyFile,
        },
      },
    },
    credentials: new CredentialHolder(await pki.credentials("web", { app: "web" })),
    policy: new PolicyHolder({
      trustDomain: TRUST_DOMAIN,
      policies: policySet(await readFile(POLICY_FILE, "utf8")),
    }),
    peers: new PeerDirectoryHolder(),
    flows,
    logger: quiet,
    sessionClock: () => Date.now() + clock.offsetMs,
  });
  return {
    provider,
    app,
    sidecar,
    flows,
    origin,
    sessionKeyFile,
    clock,
    async close() {
      await sidecar.close();
      await Promise.all([app.close(), provider.close(), pki.close()]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
