/**
 * deploy/ as Kustomize builds it: every kustomization under deploy/, and the combinations of
 * examples and components in COMBINATIONS, rendered with the real
 * `kubectl kustomize` of the pinned Kubernetes build (scripts/rig/binaries.ts). Shared by the
 * checks (test/integration/deploy.test.ts, deploy-daemonset.test.ts) and the apiserver's dry run
 * (test/integration/deploy-server.test.ts).
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { REPO } from './lifeboat.ts';

const run = promisify(execFile);

export const DEPLOY = path.join(REPO, 'deploy');

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, unknown>;

export interface Rendered {
  /**
   * The kustomization's directory, relative to the repository (e.g. `deploy/examples/local`), or
   * for a combination the example and the components it adds (`deploy/examples/local + restore`).
   */
  dir: string;
  objects: K8sObject[];
}

/** The `kind` of the kustomization.yaml in `dir` (relative to the repository). */
function kindOf(dir: string): string {
  const k = parse(readFileSync(path.join(REPO, dir, 'kustomization.yaml'), 'utf8')) as { kind?: string } | null;
  return k?.kind ?? 'Kustomization';
}

/** Every directory under deploy/ with a kustomization.yaml, relative to the repository. */
function allKustomizationDirs(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    if (existsSync(path.join(dir, 'kustomization.yaml'))) found.push(path.relative(REPO, dir));
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  walk(DEPLOY);
  return found.sort();
}

/**
 * The kustomizations under deploy/ that build on their own, relative to the repository: the
 * install, the base, each example, the Secret templates, and the directories that let a
 * component load a file (deploy/prometheus, deploy/grafana). Components are not among them.
 */
export function kustomizations(): string[] {
  return allKustomizationDirs().filter((d) => kindOf(d) === 'Kustomization');
}

/** The Kustomize components under deploy/ (`kind: Component`), relative to the repository. */
export function components(): string[] {
  return allKustomizationDirs().filter((d) => kindOf(d) === 'Component');
}

/** An example plus components it does not list: what an install looks like with them added. */
export interface Combination {
  /** A kustomization under deploy/, relative to the repository. */
  base: string;
  /** Names of components in deploy/components/. */
  components: string[];
}

/**
 * Combinations the tests render besides the kustomizations: the restore and drill components on
 * top of installs with each kind of store, which is what an operator does for a restore.
 */
export const COMBINATIONS: readonly Combination[] = [
  { base: 'deploy/examples/local', components: ['restore'] },
  { base: 'deploy/examples/local', components: ['drill'] },
  { base: 'deploy/examples/ceph-rgw-obc', components: ['restore'] },
  { base: 'deploy/examples/rgw-static', components: ['drill'] },
  { base: 'deploy/examples/kube-prometheus-stack', components: ['restore', 'drill'] },
];

export const combinationName = (c: Combination) => [c.base, ...c.components].join(' + ');

/**
 * `kubectl kustomize` of a kustomization of its own in a temporary directory, with `base` as its
 * resource and the components added, as an operator would write it.
 */
export async function renderCombination(c: Combination): Promise<Rendered> {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-kustomize-'));
  try {
    const rel = (p: string) => path.relative(dir, path.join(REPO, p));
    const kustomization = {
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      resources: [rel(c.base)],
      components: c.components.map((n) => rel(`deploy/components/${n}`)),
    };
    await writeFile(path.join(dir, 'kustomization.yaml'), stringify(kustomization));
    return { ...(await build(dir, combinationName(c))), dir: combinationName(c) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * `kubectl kustomize <dir>` (dir relative to the repository), parsed. A failure names the
 * directory, and so does any warning: rendering must print none.
 */
export async function render(dir: string): Promise<Rendered> {
  return build(path.join(REPO, dir), dir);
}

async function build(absolute: string, dir: string): Promise<Rendered> {
  const { kubectl } = kubernetesBinaries();
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await run(kubectl, ['kustomize', absolute], { maxBuffer: 32 << 20 }));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
  if (stderr.trim() !== '') throw new Error(`kubectl kustomize ${dir} printed: ${stderr.trim()}`);
  const objects = parseAllDocuments(stdout)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]!.message}`);
      return d.toJS() as K8sObject;
    })
    .filter((o) => o !== null);
  return { dir, objects };
}
