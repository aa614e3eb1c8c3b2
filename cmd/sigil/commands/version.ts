import type { Command } from "commander";
import { SIGIL_VERSION } from "../../../core/version.ts";
import { apiFetch } from "../api-fetch.ts";
import { apiSettings, processIo, withApiOption } from "../cli-support.ts";
import type { ApiOptions, CliIo } from "../cli-support.ts";
import { outputFormat, printStructured, withOutputOption } from "../output.ts";

type ServerVersion = { api: string; version: string } | { api: string; unreachable: string };

/** `sigil version`: this client's release and the control plane's (`GET /api/version`, no token needed). */
export function register(program: Command, io: CliIo = processIo): void {
  withOutputOption(
    withApiOption(program.command("version").description("this CLI's version and the control plane's")),
    ["table", "json", "yaml"],
  ).action(async (opts: ApiOptions & { output: string }) => {
    const format = outputFormat(opts, ["table", "json", "yaml"]);
    const settings = apiSettings(opts);
    const server = await serverVersion(settings.url.split(",")[0]?.trim() ?? "", apiFetch(settings.caFile));
    if (printStructured(io, format, { client: { version: SIGIL_VERSION }, server })) return;
    io.out(`client: ${SIGIL_VERSION}\n`);
    io.out(
      "version" in server
        ? `server: ${server.version} (${server.api})\n`
        : `server: unreachable at ${server.api} (${server.unreachable})\n`,
    );
  });
}

async function serverVersion(api: string, send: typeof fetch): Promise<ServerVersion> {
  try {
    const res = await send(new URL("/api/version", api), { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) return { api, unreachable: `HTTP ${res.status}` };
    const body = (await res.json()) as { version?: unknown };
    return typeof body.version === "string"
      ? { api, version: body.version }
      : { api, unreachable: "the answer names no version" };
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message ?? (err as Error).message;
    return { api, unreachable: cause };
  }
}
