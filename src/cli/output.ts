import { Option, type Command } from 'commander';
import { stringify } from 'yaml';

/**
 * How every command prints: `-o table` (the default) for people, `-o json` and `-o yaml` for
 * scripts, both the same data object. Output goes through the command's configured writeOut
 * (stdout), so a test can build the program with its own.
 */

export const OUTPUT_FORMATS = ['table', 'json', 'yaml'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

/**
 * Adds `-o, --output <format>`, and `--json`, which older scripts pass: hidden, the same as
 * `-o json` (an explicit -o wins). `data` says what json and yaml print. An unknown format is a
 * usage error naming the option and the formats (exit 2).
 */
export function addOutputOption(cmd: Command, data: string, defaultFormat: OutputFormat = 'table'): Command {
  return cmd
    .addOption(
      new Option('-o, --output <format>', `table (for people), json or yaml: ${data}`)
        .choices([...OUTPUT_FORMATS])
        .default(defaultFormat),
    )
    .addOption(new Option('--json', 'the same as -o json (kept for scripts)').hideHelp().implies({ output: 'json' }));
}

export interface Output {
  readonly format: OutputFormat;
  /** json or yaml: only the data is printed, never the lines meant for people. */
  readonly structured: boolean;
  /** A line for people; nothing with -o json or yaml. */
  line(text?: string): void;
  /** Columns padded to their widest cell; nothing with -o json or yaml. */
  table(header: string[], rows: string[][]): void;
  /** With -o json or yaml, `value` in that format; with -o table, what `human` prints. */
  data(value: unknown, human: () => void): void;
}

/** The output of `cmd`, whose options include addOutputOption's. */
export function output(cmd: Command): Output {
  const chosen = cmd.opts<{ output?: OutputFormat }>().output;
  const format: OutputFormat = chosen ?? 'table';
  const write = cmd.configureOutput().writeOut ?? ((text: string) => process.stdout.write(text));
  const structured = format !== 'table';
  const line = (text = '') => {
    if (!structured) write(`${text}\n`);
  };
  return {
    format,
    structured,
    line,
    table: (header, rows) => {
      for (const row of tableLines(header, rows)) line(row);
    },
    data: (value, human) => {
      if (format === 'table') human();
      else write(render(format, value));
    },
  };
}

/** The text of `value` in json or yaml: the same data either way (as JSON sees it). */
export function render(format: 'json' | 'yaml', value: unknown): string {
  const text = JSON.stringify(value, null, 2);
  if (format === 'json') return `${text}\n`;
  return stringify(JSON.parse(text) as unknown, { lineWidth: 0 });
}

export function tableLines(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [header, ...rows].map((row) => row.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd());
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}
