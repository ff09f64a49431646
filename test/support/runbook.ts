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

/** One line of a shell block: a variable set (`NAME=value`) or a command's argv, after expansion. */
export type RunbookLine = { assign: string; value: string; text: string } | { argv: string[]; text: string };

/** The text of the first fenced code block of section `heading` (e.g. `## A namespace deleted by mistake`). */
export function sectionBlock(markdown: string, heading: string): string {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.trim() === heading);
  if (start < 0) throw new Error(`the runbook has no section "${heading}"`);
  const level = /^#+/.exec(heading)?.[0].length ?? 2;
  const end = lines.findIndex((l, i) => i > start && new RegExp(`^#{1,${level}} `).test(l));
  const body = lines.slice(start + 1, end < 0 ? undefined : end);
  const open = body.findIndex((l) => /^\s*```/.test(l));
  if (open < 0) throw new Error(`section "${heading}" has no fenced code block`);
  const close = body.findIndex((l, i) => i > open && /^\s*```\s*$/.test(l));
  if (close < 0) throw new Error(`section "${heading}": its code block is not closed`);
  return body.slice(open + 1, close).join('\n');
}

/** The block of `heading` in docs/runbook.md. */
export async function runbookBlock(heading: string): Promise<string> {
  return sectionBlock(await readFile(RUNBOOK, 'utf8'), heading);
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
    const assign = words.length === 1 ? /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(words[0]!) : null;
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
