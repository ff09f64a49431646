/**
 * deploy/ as Kustomize builds it: every kustomization under deploy/, rendered with the real
 * `kubectl kustomize` of the pinned Kubernetes build (scripts/rig/binaries.ts). Shared by the
 * schema checks (test/integration/deploy.test.ts) and the apiserver's dry run
 * (test/integration/deploy-server.test.ts).
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { REPO } from './lifeboat.ts';

const run = promisify(execFile);

export const DEPLOY = path.join(REPO, 'deploy');

export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<string, unknown>;

export interface Rendered {
  /** The kustomization's directory, relative to the repository (e.g. `deploy/overlays/drill`). */
  dir: string;
  objects: K8sObject[];
}

/**
 * Every directory under deploy/ with a kustomization.yaml, relative to the repository: the
 * install, the base, each overlay, each component, the Secret templates.
 */
export function kustomizations(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    if (existsSync(path.join(dir, 'kustomization.yaml'))) found.push(path.relative(REPO, dir));
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(dir, e.name));
  };
  walk(DEPLOY);
  return found.sort();
}

/** `kubectl kustomize <dir>` (dir relative to the repository), parsed; a failure names the directory. */
export async function render(dir: string): Promise<Rendered> {
  const { kubectl } = kubernetesBinaries();
  let stdout: string;
  try {
    ({ stdout } = await run(kubectl, ['kustomize', path.join(REPO, dir)], { maxBuffer: 32 << 20 }));
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new Error(`kubectl kustomize ${dir} failed: ${e.stderr ?? e.message}`, { cause: err });
  }
  const objects = parseAllDocuments(stdout)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`${dir}: ${d.errors[0]!.message}`);
      return d.toJS() as K8sObject;
    })
    .filter((o) => o !== null);
  return { dir, objects };
}
