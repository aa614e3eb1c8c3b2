/**
 * The CLI's exit statuses, so a script can tell "the control plane said no" from "it is down" from
 * "I typed it wrong". Documented in README.md; every failure maps to exactly one of them.
 */
export const EXIT = {
  ok: 0,
  /** Anything else that failed; for `policy diff` and `policy validate`, "differences / invalid". */
  failure: 1,
  /** The command line itself is wrong: unknown command or flag, a bad flag value. */
  usage: 2,
  /** No control plane answered at the address used. */
  unreachable: 3,
  /** The control plane refused: bad credentials, a conflict, or verdicts a check would change. */
  refused: 4,
  /** What was named does not exist. */
  notFound: 5,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** An error that ends the command with a chosen exit status (its message is printed as `sigil: ...`). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCode,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** A wrong command line: exit status 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** Ends the command with a status and nothing more to say (what it found is already printed). */
export class QuietExit extends CliError {
  constructor(exitCode: ExitCode) {
    super("", exitCode);
  }
}

/** The exit status for an HTTP answer from the control plane (0: it was not reached at all). */
export function exitCodeForStatus(status: number): ExitCode {
  if (status === 0) return EXIT.unreachable;
  if (status === 401 || status === 403 || status === 409) return EXIT.refused;
  if (status === 404) return EXIT.notFound;
  return EXIT.failure;
}
