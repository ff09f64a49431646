import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { KitFile, KitRole, KitSource } from '../archive/manifest.ts';
import { KIT_PREFIX } from '../archive/manifest.ts';
import { sha256Hex } from '../archive/digest.ts';
import type { KitContent } from '../archive/writer.ts';
import type { Config } from '../config/schema.ts';
import { ConfigError, KitFileMissingError } from '../errors/errors.ts';
import type { ClusterConfigurationRead } from './cluster-config.ts';

/**
 * The recovery kit: what a kubeadm control plane needs besides the etcd snapshot. Every path is
 * a host path (as kubeadm writes it) resolved under `kit.hostRoot`.
 */
export const PKI_FILES = [
  'pki/ca.crt',
  'pki/ca.key',
  'pki/sa.key',
  'pki/sa.pub',
  'pki/front-proxy-ca.crt',
  'pki/front-proxy-ca.key',
  'pki/etcd/ca.crt',
  'pki/etcd/ca.key',
] as const;

const MANIFEST_RE = /\.(ya?ml|json)$/;
const ENCRYPTION_FLAG_RE = /--encryption-provider-config(?:=|\s+)["']?([^\s"']+)/;

export interface KitSpec {
  path: string;
  role: KitRole;
  required: boolean;
}

export interface CollectedKit {
  files: KitFile[];
  contents: KitContent[];
  missing: { path: string; role: KitRole; reason: string }[];
}

type KitConfig = Config['kit'];

export interface CollectOptions {
  /**
   * Where the ClusterConfiguration comes from when no file is at kit.clusterConfiguration:
   * kubeadm's ConfigMap read from etcd at the snapshot's revision (see cluster-config.ts). A file
   * on the host, when there is one, wins.
   */
  clusterConfiguration?: () => Promise<ClusterConfigurationRead>;
}

/** The cluster-configuration entry's mode when its content came from etcd (there is no file to take it from). */
const FROM_ETCD_MODE = 0o600;

/** Which files the kit holds, from config and from the kube-apiserver manifest. */
export async function kitSpecs(kit: KitConfig): Promise<KitSpec[]> {
  const k8s = kit.kubernetesDir;
  const specs: KitSpec[] = PKI_FILES.map((f) => ({ path: path.posix.join(k8s, f), role: 'pki', required: true }));

  const manifestsDir = path.posix.join(k8s, 'manifests');
  let names: string[];
  try {
    names = (await readdir(onHost(kit, manifestsDir), { withFileTypes: true }))
      .filter((e) => e.isFile() && MANIFEST_RE.test(e.name))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    throw new KitFileMissingError(manifestsDir, `the static pod manifests directory ${manifestsDir} cannot be read: ${errCode(err)}`, {
      hint: 'set kit.kubernetesDir (and kit.hostRoot when running in a container)',
    });
  }
  specs.push(...names.map((n) => ({ path: path.posix.join(manifestsDir, n), role: 'static-pod-manifest' as const, required: true })));

  specs.push({ path: kit.clusterConfiguration, role: 'cluster-configuration', required: false });

  if (kit.encryptionProviderConfig === 'auto') {
    const apiserver = path.posix.join(manifestsDir, 'kube-apiserver.yaml');
    const text = await readFile(onHost(kit, apiserver), 'utf8').catch(() => undefined);
    const flag = text === undefined ? undefined : ENCRYPTION_FLAG_RE.exec(text)?.[1];
    if (flag !== undefined) specs.push({ path: flag, role: 'encryption-provider-config', required: true });
  } else if (kit.encryptionProviderConfig !== 'none') {
    specs.push({ path: kit.encryptionProviderConfig, role: 'encryption-provider-config', required: true });
  }

  for (const extra of kit.extraFiles) specs.push({ path: extra.path, role: 'extra', required: extra.required });

  const seen = new Set<string>();
  return specs.filter((s) => !seen.has(s.path) && seen.add(s.path));
}

/**
 * Reads every kit file whole (each is capped by kit.maxFileBytes) and hashes it. The
 * cluster-configuration is the file at kit.clusterConfiguration if there is one, else what
 * `options.clusterConfiguration` reads, stored under the same path (where restores look for it);
 * its manifest entry records which. When neither has it, `missing` says why for both.
 */
export async function collectKit(kit: KitConfig, options: CollectOptions = {}): Promise<CollectedKit> {
  const result: CollectedKit = { files: [], contents: [], missing: [] };
  const add = (spec: KitSpec, content: Buffer, mode: number, source?: KitSource) => {
    const entry = KIT_PREFIX + spec.path.replace(/^\/+/, '');
    result.files.push({ entry, path: spec.path, role: spec.role, size: content.length, mode, sha256: sha256Hex(content), ...(source ? { source } : {}) });
    result.contents.push({ entry, mode, content });
  };
  for (const spec of await kitSpecs(kit)) {
    if (!path.posix.isAbsolute(spec.path)) {
      throw new ConfigError('/kit', `kit path ${spec.path} must be absolute`);
    }
    const file = onHost(kit, spec.path);
    let content: Buffer;
    let mode: number;
    try {
      const s = await stat(file);
      if (!s.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ENOTFILE' });
      if (s.size > kit.maxFileBytes) {
        throw new ConfigError('/kit/maxFileBytes', `kit file ${spec.path} is ${s.size} bytes, over the ${kit.maxFileBytes}-byte cap`);
      }
      content = await readFile(file);
      mode = s.mode & 0o7777;
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      const reason = errCode(err);
      if (spec.required) {
        throw new KitFileMissingError(spec.path, `required kit file ${spec.path} (${spec.role}) cannot be read: ${reason}`, {
          hint: spec.role === 'extra' ? 'fix kit.extraFiles' : 'set kit.kubernetesDir and kit.hostRoot to where kubeadm wrote its files',
        });
      }
      if (spec.role === 'cluster-configuration' && options.clusterConfiguration) {
        const read = await options.clusterConfiguration();
        if (read.found) add(spec, read.content, FROM_ETCD_MODE, read.source);
        else result.missing.push({ path: spec.path, role: spec.role, reason: `${reason} at ${spec.path}, and ${read.reason}` });
        continue;
      }
      result.missing.push({ path: spec.path, role: spec.role, reason });
      continue;
    }
    add(spec, content, mode, spec.role === 'cluster-configuration' ? { from: 'file' } : undefined);
  }
  return result;
}

function onHost(kit: KitConfig, hostPath: string): string {
  return path.join(kit.hostRoot, hostPath);
}

function errCode(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ENOENT' ? 'no such file' : (code ?? String(err));
}
