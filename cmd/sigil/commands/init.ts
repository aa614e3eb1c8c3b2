/**
 * `sigil init`: what an init container or a VM setup step runs to install (or remove) capture.
 * `--dry-run` prints the rules instead of applying them.
 */
import type { Command } from "commander";
import {
  CaptureApplyError,
  describePlan,
  installCapture,
  uninstallCapture,
  type CaptureTarget,
} from "../../../sidecar/capture/apply.ts";
import { CaptureConfigError, type CaptureConfig } from "../../../sidecar/capture/config.ts";
import { loadCaptureConfig, type InitSources } from "../../../sidecar/capture/load-config.ts";
import { renderCapture } from "../../../sidecar/capture/render.ts";
import { fastPathExternalRules } from "../../../sidecar/fastpath/rules.ts";

/**
 * A sidecar running the L4 fast path with `--capture-config` adds its chains to capture's
 * transaction, and leaves them when it stops (new handshakes fail closed). Removing Sigil removes
 * them too: only their names matter here, so the rules are rendered for no ports.
 */
const FAST_PATH_CHAINS = fastPathExternalRules({
  inboundPorts: [],
  outboundPorts: [],
  queueFirst: 0,
  queueCount: 1,
  failOpen: false,
});

export interface InitOutcome {
  action: "dry-run" | "install" | "uninstall";
  config: CaptureConfig;
  output: string;
}

/** The command's whole job, without commander: resolve the config, then print, install or remove. */
export async function runInit(
  sources: InitSources,
  action: InitOutcome["action"],
  netns: string | undefined,
): Promise<InitOutcome> {
  const config = await loadCaptureConfig(sources);
  if (action === "dry-run") return { action, config, output: describePlan(renderCapture(config)) };
  const target: CaptureTarget = netns ? { backend: config.backend, netns } : { backend: config.backend };
  const applied =
    action === "install"
      ? await installCapture(config, target)
      : await uninstallCapture(config, target, [FAST_PATH_CHAINS]);
  const families = applied.map((a) => `IPv${a.family}`).join(", ");
  const verb = action === "install" ? "installed" : "removed";
  return {
    action,
    config,
    output: `sigil init: capture ${verb} for ${families} (backend ${config.backend})\n`,
  };
}

/** What a `sigil init` command line asks for: where its settings come from, what to do, and where. */
export function initRequest(
  flags: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
  givenOnCli: (name: string) => boolean,
): { sources: InitSources; action: InitOutcome["action"]; netns: string | undefined } {
  const configFile = (flags.config as string | undefined) ?? (env.SIGIL_CONFIG || undefined);
  return {
    sources: { configFile, env, flags, givenOnCli },
    action: flags.dryRun ? "dry-run" : flags.uninstall ? "uninstall" : "install",
    netns: (flags.netns as string | undefined) ?? (env.SIGIL_NETNS || undefined),
  };
}

export function registerInitCommand(program: Command): Command {
  const cmd = program
    .command("init")
    .description("install the iptables rules that capture this workload's traffic (or remove them)")
    .option("-c, --config <file>", "YAML file with a `capture:` section (env SIGIL_CONFIG)")
    .option("--mode <mode>", "redirect | tproxy (env SIGIL_CAPTURE_MODE)")
    .option("--inbound-port <port>", "sidecar inbound port, default 15006 (env SIGIL_INBOUND_PORT)")
    .option("--outbound-port <port>", "sidecar outbound port, default 15001 (env SIGIL_OUTBOUND_PORT)")
    .option("--proxy-uid <uid|user>", "the sidecar's uid, exempt from capture (env SIGIL_PROXY_UID)")
    .option("--proxy-gid <gid|group>", "also require this gid for the exemption (env SIGIL_PROXY_GID)")
    .option(
      "--inbound-ports <ports>",
      "'*' or comma-separated ports to capture inbound (env SIGIL_INBOUND_PORTS)",
    )
    .option(
      "--exclude-inbound-ports <ports>",
      "inbound ports never captured (env SIGIL_EXCLUDE_INBOUND_PORTS)",
    )
    .option(
      "--exclude-outbound-ports <ports>",
      "outbound ports never captured (env SIGIL_EXCLUDE_OUTBOUND_PORTS)",
    )
    .option(
      "--exclude-outbound-cidrs <cidrs>",
      "destinations never captured (env SIGIL_EXCLUDE_OUTBOUND_CIDRS)",
    )
    .option("--capture-uids <uids>", "capture outbound only for these uids/users (env SIGIL_CAPTURE_UIDS)")
    .option("--no-outbound", "do not capture outbound traffic (env SIGIL_CAPTURE_OUTBOUND=false)")
    .option("--families <list>", "IP families, default 4,6 (env SIGIL_IP_FAMILIES)")
    .option("--backend <backend>", "auto | nft | legacy (env SIGIL_IPTABLES_BACKEND)")
    .option("--allow-root-proxy", "allow --proxy-uid 0 (exempts every root process)")
    .option(
      "--fast-path-mark-mask <mask>",
      "the fast path's mark field: connections it decided bypass the proxy (env SIGIL_FAST_PATH_MARK_MASK)",
    )
    .option("--netns <name>", "apply inside this named network namespace (env SIGIL_NETNS)")
    .option("--uninstall", "remove Sigil's chains, hooks and policy routing")
    .option("--dry-run", "print the rules instead of applying them")
    .action(async (flags: Record<string, unknown>) => {
      const { sources, action, netns } = initRequest(
        flags,
        process.env,
        (name) => cmd.getOptionValueSource(name) === "cli",
      );
      try {
        const outcome = await runInit(sources, action, netns);
        process.stdout.write(outcome.output);
      } catch (error) {
        if (error instanceof CaptureConfigError || error instanceof CaptureApplyError) {
          process.stderr.write(`sigil init: ${error.message}\n`);
          process.exitCode = 1;
          return;
        }
        throw error;
      }
    });
  return cmd;
}

export function register(program: Command): void {
  registerInitCommand(program);
}
