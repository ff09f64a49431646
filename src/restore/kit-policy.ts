import path from 'node:path';
import type { KitRole } from '../archive/manifest.ts';
import type { Config } from '../config/schema.ts';
import { UnsafePathError } from '../errors/errors.ts';

/** The widest mode a placed kit file may have: rw-r--r--, never executable, setuid, setgid or sticky. */
export const MAX_FILE_MODE = 0o644;

/**
 * Whether this host's own config lets a restore write a kit file of `role` at `file` with `mode`.
 * The archive names the path and mode, and the archive is only as trustworthy as whoever could
 * write the bucket; so the path must be one the restoring side would itself back up:
 *
 * - pki: under `<kit.kubernetesDir>/pki/`;
 * - static-pod-manifest: under `<kit.kubernetesDir>/manifests/`;
 * - cluster-configuration: exactly kit.clusterConfiguration;
 * - encryption-provider-config: exactly kit.encryptionProviderConfig, or with `auto` anywhere
 *   under kit.kubernetesDir outside manifests/ (where kubeadm setups keep it);
 * - extra: exactly one of kit.extraFiles.
 *
 * and the mode no wider than 0644 (0600 and 0644 are what kubeadm writes). Throws
 * UnsafePathError naming the setting that would allow it.
 */
export function checkKitTarget(kit: Config['kit'], file: { path: string; role: KitRole; mode: number }): void {
  const where = `kit file ${JSON.stringify(file.path)} (${file.role})`;
  if (file.path.includes('\0') || !path.posix.isAbsolute(file.path) || path.posix.normalize(file.path) !== file.path) {
    throw new UnsafePathError(file.path, `${where} is not a clean absolute path; refusing to place it`);
  }
  const rule = allowed(kit, file.path, file.role);
  if (!rule.ok) {
    throw new UnsafePathError(file.path, `${where}: this host's config allows ${rule.allows}; refusing to write a path the backup chose`, {
      hint: `if the path is right, set ${rule.setting} in this host's config, then plan again`,
    });
  }
  if ((file.mode & ~MAX_FILE_MODE) !== 0) {
    throw new UnsafePathError(file.path, `${where} has mode 0${file.mode.toString(8)}, wider than 0${MAX_FILE_MODE.toString(8)}; refusing to place an executable, setuid, setgid or writable-by-others file`);
  }
}

function allowed(kit: Config['kit'], file: string, role: KitRole): { ok: boolean; allows: string; setting: string } {
  const k8s = path.posix.normalize(kit.kubernetesDir);
  const manifests = path.posix.join(k8s, 'manifests');
  const pki = path.posix.join(k8s, 'pki');
  const under = (dir: string) => file.startsWith(`${dir}/`);
  const q = (s: string) => JSON.stringify(s);
  switch (role) {
    case 'pki':
      return { ok: under(pki), allows: `pki files only under ${q(pki)}`, setting: 'kit.kubernetesDir' };
    case 'static-pod-manifest':
      return { ok: under(manifests), allows: `static pod manifests only under ${q(manifests)}`, setting: 'kit.kubernetesDir' };
    case 'cluster-configuration':
      return { ok: file === path.posix.normalize(kit.clusterConfiguration), allows: `the ClusterConfiguration only at ${q(kit.clusterConfiguration)}`, setting: 'kit.clusterConfiguration' };
    case 'encryption-provider-config': {
      const setting = kit.encryptionProviderConfig;
      if (setting === 'none') return { ok: false, allows: 'no encryption provider config (kit.encryptionProviderConfig is none)', setting: 'kit.encryptionProviderConfig' };
      if (setting === 'auto') return { ok: under(k8s) && !under(manifests), allows: `the encryption provider config only under ${q(k8s)}, outside manifests/`, setting: 'kit.encryptionProviderConfig to the path' };
      return { ok: file === path.posix.normalize(setting), allows: `the encryption provider config only at ${q(setting)}`, setting: 'kit.encryptionProviderConfig' };
    }
    case 'extra':
      return { ok: kit.extraFiles.some((f) => path.posix.normalize(f.path) === file), allows: `extra files only at kit.extraFiles (${kit.extraFiles.map((f) => q(f.path)).join(', ') || 'none configured'})`, setting: 'kit.extraFiles' };
  }
}
