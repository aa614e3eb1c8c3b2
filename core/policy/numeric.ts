/**
 * Numbers in label values, for the `Gt`/`Lt` selector operators. Labels are strings; a value is read as
 * a number only when it is written as a plain decimal (`3`, `-1`, `7.5`). Anything else (`0x10`, `1e3`,
 * `Infinity`, `" 3"`, empty) is not a number, so a scanner's label can never be read two ways.
 */

const DECIMAL = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?$/;

/** The number a label value spells, or null when it is not a plain decimal. */
export function labelNumber(value: string): number | null {
  if (!DECIMAL.test(value)) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

/** Why a policy's comparison bound is unusable, or null when it is a plain decimal. */
export function numericBoundProblem(operator: string, value: string): string | null {
  if (labelNumber(value) !== null) return null;
  return `operator ${operator} compares numbers: ${JSON.stringify(value)} is not a decimal number (write e.g. 0, 3 or 7.5)`;
}
