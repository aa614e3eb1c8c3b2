import { format, resolveConfig } from "prettier";

/**
 * Formats a document the harness writes into the repository with the repository's own prettier
 * configuration (the one `npm test` checks against), so a benchmark run leaves the tree clean.
 * The parser follows from the file's name.
 */
export async function formatForRepo(file: string, text: string): Promise<string> {
  const config = (await resolveConfig(file)) ?? {};
  return format(text, { ...config, filepath: file });
}
