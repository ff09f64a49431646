/**
 * The runbook's commands, as tests run them: the fenced shell block of a section of
 * docs/runbook.md, split into commands the way sh would (comments, `\` continuations, quotes,
 * `$VAR` and `${VAR}`), so a test runs what the runbook says and the runbook cannot drift from
 * what was tested. Only what the runbook uses is understood; anything else (pipes, `$(...)`,
 * globs, an unknown variable) is refused rather than guessed at.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { REPO } from './lifeboat.ts';

export const RUNBOOK = path.join(REPO, 'docs/runbook.md');

const ASSIGNMENT = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s;

/** One line of a shell block: a variable set (`NAME=value`) or a command's argv, after expansion. */
export type RunbookLine = { assign: string; value: string; text: string } | { argv: string[]; text: string };

/**
 * The text of the first fenced code block of section `heading` (e.g. `## A namespace deleted by
 * mistake`), or the first one whose info string is `lang` (`sh`, `yaml`).
 */
export function sectionBlock(markdown: string, heading: string, lang?: string): string {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  if (start < 0) throw new Error(`the runbook has no section "${heading}"`);
  const level = /^#+/.exec(heading)?.[0].length ?? 2;
  const end = lines.findIndex((l, i) => i > start && new RegExp(`^#{1,${level}} `).test(l));
  const body = lines.slice(start + 1, end < 0 ? undefined : end);
  let from = 0;
  for (;;) {
    const open = body.findIndex((l, i) => i >= from && /^\s*```/.test(l));
    if (open < 0) throw new Error(`section "${heading}" has no fenced code block${lang ? ` of ${lang}` : ''}`);
    const close = body.findIndex((l, i) => i > open && /^\s*```\s*$/.test(l));
    if (close < 0) throw new Error(`section "${heading}": its code block is not closed`);
    if (lang === undefined || body[open]!.trim() === `\`\`\`${lang}`) return body.slice(open + 1, close).join('\n');
    from = close + 1;
  }
}

/** The block of `heading` in docs/runbook.md (the first of `lang`, if given). */
export async function runbookBlock(heading: string, lang?: string): Promise<string> {
  return sectionBlock(await readFile(RUNBOOK, 'utf8'), heading, lang);
}

/**
 * A shell block run one line at a time, as an operator types it: a line's variables are expanded
 * when it is reached, so a later line may use what an earlier command printed (`set(TOKEN, ...)`).
 * `fixed` variables win over the block's own assignments.
 */
export class ShellSession {
  readonly #env: Record<string, string>;
  readonly #fixed: ReadonlySet<string>;
  readonly #lines: string[];
  #next = 0;

  constructor(block: string, fixed: Record<string, string> = {}) {
    this.#env = { ...fixed };
    this.#fixed = new Set(Object.keys(fixed));
    this.#lines = block.replace(/\\\n/g, ' ').split('\n');
  }

  /** Sets a variable from what a command printed. */
  set(name: string, value: string): void {
    this.#env[name] = value;
  }

  /** The next command, its assignments before it applied; undefined at the end of the block. */
  next(): { argv: string[]; text: string } | undefined {
    while (this.#next < this.#lines.length) {
      const text = this.#lines[this.#next++]!.trim();
      const words = shellWords(text, this.#env);
      if (words.length === 0) continue;
      const assign = words.length === 1 ? ASSIGNMENT.exec(words[0]!) : null;
      if (!assign) return { argv: words, text };
      if (!this.#fixed.has(assign[1]!)) this.#env[assign[1]!] = assign[2]!;
    }
    return undefined;
  }
}

/**
 * The commands of a shell block, in order. `vars` are set before the block runs and win over the
 * block's own assignments (a test gives the time it measured); the block's other assignments
 * apply to the lines after them.
 */
export function shellLines(block: string, vars: Record<string, string> = {}): RunbookLine[] {
  const env: Record<string, string> = { ...vars };
  const out: RunbookLine[] = [];
  const joined = block.replace(/\\\n/g, ' ');
  for (const raw of joined.split('\n')) {
    const words = shellWords(raw, env);
    if (words.length === 0) continue;
    const text = raw.trim();
    const assign = words.length === 1 ? ASSIGNMENT.exec(words[0]!) : null;
    if (assign) {
      const [, name, value] = assign as unknown as [string, string, string];
      if (!(name in vars)) env[name] = value;
      out.push({ assign: name, value: env[name]!, text });
      continue;
    }
    out.push({ argv: words, text });
  }
  return out;
}

/** One line split into words as sh does, variables expanded from `env`; a `#` that starts a word starts a comment. */
export function shellWords(line: string, env: Record<string, string>): string[] {
  const words: string[] = [];
  let word: string | undefined;
  let i = 0;
  const add = (s: string) => (word = (word ?? '') + s);
  const variable = (): string => {
    const m = /^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/.exec(line.slice(i));
    if (!m) throw new Error(`unsupported $ in: ${line}`);
    const name = (m[1] ?? m[2])!;
    const value = env[name];
    if (value === undefined) throw new Error(`$${name} is not set in: ${line}`);
    i += m[0].length;
    return value;
  };
  while (i < line.length) {
    const c = line[i]!;
    if (/\s/.test(c)) {
      if (word !== undefined) words.push(word);
      word = undefined;
      i++;
    } else if (c === '#' && word === undefined) {
      break;
    } else if (c === "'") {
      const close = line.indexOf("'", i + 1);
      if (close < 0) throw new Error(`unclosed ' in: ${line}`);
      add(line.slice(i + 1, close));
      i = close + 1;
    } else if (c === '"') {
      add('');
      i++;
      while (line[i] !== '"') {
        if (i >= line.length) throw new Error(`unclosed " in: ${line}`);
        if (line[i] === '$') add(variable());
        else if (line[i] === '\\' && /["\\$`]/.test(line[i + 1] ?? '')) {
          add(line[i + 1]!);
          i += 2;
        } else {
          if (line[i] === '`') throw new Error(`unsupported \` in: ${line}`);
          add(line[i]!);
          i++;
        }
      }
      i++;
    } else if (c === '$') {
      if (line[i + 1] === '(') throw new Error(`unsupported $( in: ${line}`);
      // Unquoted: the value is split into words, as sh does.
      const parts = variable().split(/\s+/);
      for (const [n, p] of parts.entries()) {
        if (n > 0) {
          if (word !== undefined) words.push(word);
          word = undefined;
        }
        if (p !== '') add(p);
      }
    } else if (c === '\\') {
      add(line[i + 1] ?? '');
      i += 2;
    } else if (/[|;&<>`*?]/.test(c)) {
      throw new Error(`unsupported ${c} in: ${line}`);
    } else {
      add(c);
      i++;
    }
  }
  if (word !== undefined) words.push(word);
  return words;
}
