/** The last lines of each process log, for a failure report before the work directory is removed. */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

export async function tailLogs(dir: string, lines = 15): Promise<string> {
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith(".log")).sort();
  const parts: string[] = [];
  for (const file of files) {
    const text = await readFile(join(dir, file), "utf8").catch(() => "");
    const tail = text.trimEnd().split("\n").slice(-lines).join("\n");
    if (tail !== "") parts.push(`--- ${file} (last ${lines} lines)\n${tail}`);
  }
  return parts.length > 0 ? `${parts.join("\n")}\n` : "";
}
