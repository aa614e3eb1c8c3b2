import type { Command } from "commander";

/**
 * Shell completion scripts generated from the commander command tree, so every command and option
 * the CLI has is completed and nothing is listed twice. Each shell gets a table of command paths
 * ("sigil policy apply") with their subcommands and options, and a few lines that find the path
 * of the words typed so far.
 */

interface Node {
  readonly path: string;
  readonly children: readonly string[];
  readonly options: readonly { flags: string[]; description: string; takesValue: boolean }[];
  readonly description: string;
}

/** Values an option's argument can take, where the CLI knows them. */
const OPTION_VALUES: Readonly<Record<string, string>> = {
  "--output": "table wide json yaml",
  "-o": "table wide json yaml",
  "--fail-on": "change deny never",
};

function walk(cmd: Command, path: string, out: Node[]): Node[] {
  const options = cmd.options.map((o) => ({
    flags: [o.long, o.short].filter((f): f is string => typeof f === "string"),
    description: o.description,
    takesValue: o.required || o.optional,
  }));
  out.push({
    path,
    children: cmd.commands.map((c) => c.name()),
    options: [...options, { flags: ["--help", "-h"], description: "show help", takesValue: false }],
    description: cmd.description(),
  });
  for (const child of cmd.commands) walk(child, `${path} ${child.name()}`, out);
  return out;
}

const shellWord = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;

export function bashCompletion(program: Command): string {
  const nodes = walk(program, "sigil", []);
  const entries = (pick: (n: Node) => string) =>
    nodes.map((n) => `    [${shellWord(n.path)}]=${shellWord(pick(n))}`).join("\n");
  const valued = [
    ...new Set(nodes.flatMap((n) => n.options.filter((o) => o.takesValue).flatMap((o) => o.flags))),
  ];
  return `# sigil completion for bash: source <(sigil completion bash)
_sigil_complete() {
  local -A children=(
${entries((n) => n.children.join(" "))}
  )
  local -A options=(
${entries((n) => n.options.flatMap((o) => o.flags).join(" "))}
  )
  local -A values=(
${Object.entries(OPTION_VALUES)
  .map(([k, v]) => `    [${shellWord(k)}]=${shellWord(v)}`)
  .join("\n")}
  )
  local valued=" ${valued.join(" ")} "
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" path=sigil i w
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    if [[ " \${children[$path]} " == *" $w "* ]]; then path="$path $w"; fi
  done
  ((COMP_CWORD > 1)) && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [[ -n "$prev" && "$valued" == *" $prev "* ]]; then
    if [[ -n "\${values[$prev]}" ]]; then
      COMPREPLY=($(compgen -W "\${values[$prev]}" -- "$cur"))
    else
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    COMPREPLY=($(compgen -W "\${options[$path]}" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "\${children[$path]}" -- "$cur"))
  fi
}
complete -o default -F _sigil_complete sigil
`;
}

/** zsh runs the bash function through its bash-completion emulation (bashcompinit). */
export function zshCompletion(program: Command): string {
  return `#compdef sigil
# sigil completion for zsh: source <(sigil completion zsh)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashCompletion(program).split("\n").slice(1).join("\n")}`;
}

export function fishCompletion(program: Command): string {
  const nodes = walk(program, "sigil", []);
  const fishWord = (s: string) => `'${s.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  const cases = nodes
    .filter((n) => n.children.length > 0)
    .map((n) => `    case ${fishWord(n.path)}\n      printf '%s\\n' ${n.children.map(fishWord).join(" ")}`)
    .join("\n");
  const lines: string[] = [];
  for (const n of nodes) {
    const at = `-n ${fishWord(`test "$(__sigil_path)" = ${fishWord(n.path)}`)}`;
    const parent = n.path.split(" ").slice(0, -1).join(" ");
    if (parent) {
      const name = n.path.split(" ").pop() as string;
      lines.push(
        `complete -c sigil -f -n ${fishWord(`test "$(__sigil_path)" = ${fishWord(parent)}`)} -a ${fishWord(name)} -d ${fishWord(n.description.slice(0, 60))}`,
      );
    }
    for (const o of n.options) {
      const long = o.flags.find((f) => f.startsWith("--"));
      const short = o.flags.find((f) => !f.startsWith("--"));
      const values = (long && OPTION_VALUES[long]) ?? (short && OPTION_VALUES[short]);
      lines.push(
        [
          "complete -c sigil",
          at,
          long ? `-l ${long.slice(2)}` : "",
          short ? `-s ${short.slice(1)}` : "",
          o.takesValue ? "-r" : "",
          values ? `-f -a ${fishWord(values)}` : "",
          `-d ${fishWord(o.description.slice(0, 60))}`,
        ]
          .filter((p) => p !== "")
          .join(" "),
      );
    }
  }
  return `# sigil completion for fish: sigil completion fish | source
function __sigil_children
  switch $argv[1]
${cases}
  end
end
function __sigil_path
  set -l path sigil
  for w in (commandline -opc)[2..-1]
    if contains -- $w (__sigil_children $path)
      set path "$path $w"
    end
  end
  echo $path
end
complete -c sigil -f
${lines.join("\n")}
`;
}
