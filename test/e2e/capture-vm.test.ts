/**
 * The VM-local process mode of examples/vm/: with the example's capture.yaml (user names replaced by
 * the ids this test uses; on a VM they resolve after useradd), only the application's user is captured
 * outbound and only its port inbound; other processes and ports on the "host" are untouched.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installCapture, uninstallCapture } from "../../sidecar/capture/apply.ts";
import type { CaptureConfig } from "../../sidecar/capture/config.ts";
import { loadCaptureConfig } from "../../sidecar/capture/load-config.ts";
import { NetnsLab, type LabHost } from "../support/netns.ts";
import { startTagServer, tcpRequest } from "./capture-fixtures.ts";

const PROXY = { uid: 1337, gid: 1337 };
const APP = { uid: 2000, gid: 2000 };
const OTHER = { uid: 3000, gid: 3000 };

describe("examples/vm capture.yaml on a namespace standing in for a VM", () => {
  let lab: NetnsLab;
  let vm: LabHost;
  let peer: LabHost;
  let config: CaptureConfig;
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sigil-vm-"));
    const example = await readFile(new URL("../../examples/vm/capture.yaml", import.meta.url), "utf8");
    const file = join(dir, "capture.yaml");
    await writeFile(
      file,
      example
        .replace(/proxyUid: sigil-proxy/, `proxyUid: ${PROXY.uid}`)
        .replace(/proxyGid: sigil-proxy/, `proxyGid: ${PROXY.gid}`)
        .replace(/captureUids: \[app\]/, `captureUids: [${APP.uid}]`),
    );
    config = await loadCaptureConfig({ configFile: file, env: {}, flags: {}, givenOnCli: () => false });
    lab = await NetnsLab.create(["vm", "peer"], { subnet: 50 });
    vm = lab.host("vm");
    peer = lab.host("peer");
    await installCapture(config, { backend: config.backend, netns: vm.ns.name });
    await startTagServer(peer.ns, "::", 9000, "peer-9000");
    await startTagServer(vm.ns, "::", 15001, "sidecar-outbound", PROXY);
    await startTagServer(vm.ns, "::", 15006, "sidecar-inbound", PROXY);
    await startTagServer(vm.ns, "::", 8080, "app-8080", APP);
    await startTagServer(vm.ns, "::", 2222, "ssh-2222", OTHER);
  });

  afterAll(async () => {
    await lab?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it("captures the application's outbound TCP and nobody else's", async () => {
    expect(config.captureUids).toEqual([APP.uid]);
    expect(await tcpRequest(vm.ns, peer.ipv4, 9000, APP)).toBe("sidecar-outbound");
    expect(await tcpRequest(vm.ns, peer.ipv6, 9000, APP)).toBe("sidecar-outbound");
    expect(await tcpRequest(vm.ns, peer.ipv4, 9000, OTHER)).toBe("peer-9000");
    expect(await tcpRequest(vm.ns, peer.ipv4, 9000, PROXY)).toBe("peer-9000");
  });

  it("captures only the application's port inbound", async () => {
    expect(await tcpRequest(peer.ns, vm.ipv4, 8080)).toBe("sidecar-inbound");
    expect(await tcpRequest(peer.ns, vm.ipv6, 8080)).toBe("sidecar-inbound");
    expect(await tcpRequest(peer.ns, vm.ipv4, 2222)).toBe("ssh-2222");
  });

  it("is removed by `sigil init --uninstall` (ExecStop)", async () => {
    await uninstallCapture(config, { backend: config.backend, netns: vm.ns.name });
    expect(await tcpRequest(vm.ns, peer.ipv4, 9000, APP)).toBe("peer-9000");
    expect(await tcpRequest(peer.ns, vm.ipv4, 8080)).toBe("app-8080");
  });
});
