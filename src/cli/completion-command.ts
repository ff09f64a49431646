import { Argument, type Command } from 'commander';

const SHELLS = ['bash', 'zsh', 'fish'] as const;
type Shell = (typeof SHELLS)[number];

const HELP = `
Examples:
  source <(lifeboat completion bash)                           # this shell
  lifeboat completion bash > /etc/bash_completion.d/lifeboat   # every new bash
  lifeboat completion zsh > "\${fpath[1]}/_lifeboat"             # zsh (bash completion through bashcompinit)
  lifeboat completion fish > ~/.config/fish/completions/lifeboat.fish`;

/** A command's words: its subcommands' names and its long options. */
interface Words {
  path: string[];
  subcommands: string[];
  options: string[];
}

/** Every command of `program`, with the words that may follow it; the program itself first. */
function words(program: Command): Words[] {
  const out: Words[] = [];
  const walk = (cmd: Command, path: string[]) => {
    const options = cmd.options.filter((o) => !o.hidden).map((o) => o.long).filter((l): l is string => l !== undefined);
    out.push({ path, subcommands: cmd.commands.map((c) => c.name()), options: [...options, '--help'] });
    for (const sub of cmd.commands) walk(sub, [...path, sub.name()]);
  };
  walk(program, []);
  return out;
}

/** A bash completion: the words after the subcommand path typed so far (options stay out of the path). */
function bash(all: Words[]): string {
  const cases = all
    .map((w) => `    "${w.path.join(' ')}") words="${[...w.subcommands, ...w.options].join(' ')}" ;;`)
    .join('\n');
  return `# lifeboat bash completion: source <(lifeboat completion bash)
_lifeboat() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path="" word words i
  for ((i = 1; i < COMP_CWORD; i++)); do
    word="\${COMP_WORDS[i]}"
    case "$word" in -*) continue ;; esac
    case " $(_lifeboat_subcommands "$path") " in *" $word "*) path="\${path:+$path }$word" ;; esac
  done
  case "$path" in
${cases}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
_lifeboat_subcommands() {
  case "$1" in
${all.filter((w) => w.subcommands.length > 0).map((w) => `    "${w.path.join(' ')}") echo "${w.subcommands.join(' ')}" ;;`).join('\n')}
  esac
}
complete -o default -F _lifeboat lifeboat
`;
}

function zsh(all: Words[]): string {
  return `#compdef lifeboat
# lifeboat zsh completion, through zsh's bash completion support.
autoload -U +X bashcompinit && bashcompinit
${bash(all)}`;
}

function fish(all: Words[]): string {
  const lines = ['# lifeboat fish completion', 'complete -c lifeboat -f'];
  for (const w of all) {
    // fish tests the words already typed: the last subcommand of the path must be there.
    const condition = w.path.length === 0 ? '__fish_use_subcommand' : `__fish_seen_subcommand_from ${w.path.at(-1)}`;
    if (w.subcommands.length > 0) lines.push(`complete -c lifeboat -n '${condition}' -a '${w.subcommands.join(' ')}'`);
    for (const o of w.options) lines.push(`complete -c lifeboat -n '${condition}' -l ${o.replace(/^--/, '')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** `lifeboat completion bash|zsh|fish`: a completion script for every command and option. */
export function registerCompletionCommand(program: Command): void {
  program
    .command('completion')
    .description('Print a shell completion script for every command and option of lifeboat.')
    .addArgument(new Argument('<shell>', 'the shell').choices(SHELLS))
    .addHelpText('after', HELP)
    .action((shell: Shell) => {
      const all = words(program);
      process.stdout.write(shell === 'bash' ? bash(all) : shell === 'zsh' ? zsh(all) : fish(all));
    });
}
