/**
 * The Dockerfile as a build would read it, without a Docker engine: its stages with the global
 * ARG defaults filled in, its instructions' arguments and flags, and .dockerignore. Used by
 * test/integration/image.test.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { DockerfileParser, type Dockerfile, type Instruction } from 'dockerfile-ast';
import { REPO } from './lifeboat.ts';

export const DOCKERFILE_TEXT = readFileSync(path.join(REPO, 'Dockerfile'), 'utf8');
export const dockerfile: Dockerfile = DockerfileParser.parse(DOCKERFILE_TEXT);

/** ARG defaults declared before the first FROM. */
export const globalArgs = new Map<string, string>();
for (const a of dockerfile.getInitialARGs()) {
  const p = a.getProperty();
  if (p?.getValue()) globalArgs.set(p.getName(), p.getValue()!);
}

/** `${NAME}` and `$NAME` replaced by `values` (the global ARG defaults unless given); unknown names stay. */
export const expand = (s: string, values: ReadonlyMap<string, string> = globalArgs) =>
  s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a: string | undefined, b: string | undefined) => values.get((a ?? b)!) ?? `\${${a ?? b}}`);

export interface Stage {
  index: number;
  /** registry/name, with the ARG defaults filled in. */
  image: string;
  tag: string;
  name: string | null;
  instructions: Instruction[];
}

export const stages: Stage[] = dockerfile.getFROMs().map((f, i) => ({
  index: i,
  image: expand(f.getImage() ?? '').replace(/:[^:/]+$/, ''),
  tag: expand(f.getImage() ?? '').match(/:([^:/]+)$/)?.[1] ?? '',
  name: f.getBuildStage(),
  instructions: dockerfile.getInstructions().filter((ins) => {
    const next = dockerfile.getFROMs()[i + 1];
    return ins.getRange().start.line > f.getRange().start.line && (!next || ins.getRange().start.line < next.getRange().start.line);
  }),
}));
export const finalStage = stages.at(-1)!;

export const args = (ins: Instruction) => ins.getArguments().map((a) => a.getValue());
export const flagValue = (ins: Instruction, name: string) =>
  (ins as unknown as { getFlags(): { getName(): string; getValue(): string | null }[] }).getFlags().find((f) => f.getName() === name)?.getValue() ?? undefined;
export const instructions = (stage: Stage, keyword: string) => stage.instructions.filter((i) => i.getKeyword() === keyword);

/** The JSON (exec form) array of CMD, ENTRYPOINT or HEALTHCHECK CMD. */
export const execForm = (ins: Instruction) => {
  const text = ins.getTextContent();
  const json = text.slice(text.indexOf('['));
  return JSON.parse(json.replace(/\\\n/g, '')) as string[];
};

/** An ARG of a stage: its name and default (undefined when it has none). */
export function stageArgs(stage: Stage): Map<string, string | undefined> {
  const out = new Map<string, string | undefined>();
  for (const ins of instructions(stage, 'ARG')) {
    const p = (ins as unknown as { getProperty(): { getName(): string; getValue(): string | null } | null }).getProperty();
    if (p) out.set(p.getName(), p.getValue() ?? undefined);
  }
  return out;
}

/** The LABELs of a stage, name to value as written (ARG references unexpanded). */
export function labels(stage: Stage): Map<string, string> {
  const out = new Map<string, string>();
  for (const l of instructions(stage, 'LABEL')) {
    for (const p of (l as unknown as { getProperties(): { getName(): string; getValue(): string }[] }).getProperties()) out.set(p.getName(), p.getValue());
  }
  return out;
}

/**
 * A .dockerignore of the forms this repository uses: `*`, `name`, `dir/` and `!name`, last match
 * wins. Any other form fails the test rather than being misread.
 */
export function dockerignore(): (rel: string) => boolean {
  const rules = readFileSync(path.join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  for (const rule of rules) assert.match(rule, /^!?(\*|[\w.-]+(\/[\w.-]+)*\/?)$/, `.dockerignore rule "${rule}" is of a form this check does not read`);
  return (rel) => {
    let ignored = false;
    for (const rule of rules) {
      const negate = rule.startsWith('!');
      const pattern = (negate ? rule.slice(1) : rule).replace(/\/$/, '');
      const hit = pattern === '*' ? true : rel === pattern || rel.startsWith(`${pattern}/`);
      if (hit) ignored = !negate;
    }
    return ignored;
  };
}
