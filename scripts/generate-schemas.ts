/**
 * Writes the policy kinds' JSON Schemas to schemas/ from the zod schemas in core/policy.
 * `npx tsx scripts/generate-schemas.ts` after changing core/policy/schema.ts;
 * test/unit/policy-json-schema.test.ts fails while the committed files differ.
 */
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { format, resolveConfig } from "prettier";
import { policyJsonSchemas } from "../core/policy/json-schema.ts";

const dir = path.join(import.meta.dirname, "..", "schemas");
for (const [file, schema] of Object.entries(policyJsonSchemas())) {
  // Formatted as the repository's formatter checks it, so a regeneration leaves `npm run check` clean.
  const target = path.join(dir, file);
  const options = await resolveConfig(target);
  await writeFile(target, await format(JSON.stringify(schema), { ...options, filepath: target }));
  process.stdout.write(`wrote schemas/${file}\n`);
}
