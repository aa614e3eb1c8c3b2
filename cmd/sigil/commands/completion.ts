import type { Command } from "commander";
import { processIo } from "../cli-support.ts";
import type { CliIo } from "../cli-support.ts";
import { bashCompletion, fishCompletion, zshCompletion } from "../completion.ts";
import { UsageError } from "../exit-codes.ts";

/** `sigil completion bash|zsh|fish`: the shell's completion script for every command and option. */
export function register(program: Command, io: CliIo = processIo): void {
  program
    .command("completion <shell>")
    .description("print the completion script for bash, zsh or fish (bash: source <(sigil completion bash))")
    .action((shell: string) => {
      const make = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion }[shell];
      if (!make) throw new UsageError(`completion: shell must be bash, zsh or fish, not "${shell}"`);
      io.out(make(program));
    });
}
