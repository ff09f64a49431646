import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from '../../src/config/load.ts';
import { UnsafePathError } from '../../src/errors/errors.ts';
import { checkKitTarget } from '../../src/restore/kit-policy.ts';
import type { KitRole } from '../../src/archive/manifest.ts';

const kit = (extra: Record<string, unknown> = {}) => resolveConfig({ cluster: 'c1', kit: { extraFiles: [{ path: '/etc/kubernetes/audit-policy.yaml' }], ...extra } }).kit;

test('kit files go only where this host\'s own config would back them up', () => {
  const allowed: [string, KitRole, number][] = [
    ['/etc/kubernetes/pki/ca.key', 'pki', 0o600],
    ['/etc/kubernetes/pki/etcd/ca.crt', 'pki', 0o644],
    ['/etc/kubernetes/manifests/etcd.yaml', 'static-pod-manifest', 0o600],
    ['/etc/kubernetes/kubeadm-config.yaml', 'cluster-configuration', 0o644],
    ['/etc/kubernetes/enc/enc.yaml', 'encryption-provider-config', 0o600],
    ['/etc/kubernetes/audit-policy.yaml', 'extra', 0o640],
  ];
  for (const [p, role, mode] of allowed) assert.doesNotThrow(() => checkKitTarget(kit(), { path: p, role, mode }), p);

  const refused: [string, KitRole, number, RegExp][] = [
    ['/etc/cron.d/lifeboat', 'extra', 0o644, /extra files only at kit\.extraFiles \("\/etc\/kubernetes\/audit-policy\.yaml"\)/],
    ['/etc/cron.d/lifeboat', 'pki', 0o600, /pki files only under "\/etc\/kubernetes\/pki"/],
    ['/etc/kubernetes/pki/../../cron.d/x', 'pki', 0o600, /not a clean absolute path/],
    ['etc/kubernetes/pki/ca.key', 'pki', 0o600, /not a clean absolute path/],
    ['/etc/kubernetes/pki-evil/ca.key', 'pki', 0o600, /pki files only under/],
    ['/etc/kubernetes/admin.conf', 'cluster-configuration', 0o600, /ClusterConfiguration only at "\/etc\/kubernetes\/kubeadm-config\.yaml"/],
    ['/etc/kubernetes/manifests/evil.yaml', 'encryption-provider-config', 0o600, /outside manifests/],
    ['/root/.ssh/authorized_keys', 'encryption-provider-config', 0o600, /only under "\/etc\/kubernetes"/],
    ['/etc/kubernetes/pki/ca.key', 'pki', 0o4755, /mode 04755, wider than 0644/],
    ['/etc/kubernetes/pki/ca.key', 'pki', 0o700, /mode 0700, wider than 0644/],
    ['/etc/kubernetes/pki/ca.key', 'pki', 0o666, /mode 0666/],
  ];
  for (const [p, role, mode, message] of refused) {
    assert.throws(() => checkKitTarget(kit(), { path: p, role, mode }), (err: unknown) => err instanceof UnsafePathError && message.test(err.message), `${p} ${role} 0${mode.toString(8)}`);
  }
});

test('the encryption provider config: an explicit path is the only one; none allows nothing; the refusal names the setting', () => {
  const file = { path: '/etc/kubernetes/enc/enc.yaml', role: 'encryption-provider-config' as const, mode: 0o600 };
  assert.doesNotThrow(() => checkKitTarget(kit({ encryptionProviderConfig: '/etc/kubernetes/enc/enc.yaml' }), file));
  assert.throws(() => checkKitTarget(kit({ encryptionProviderConfig: '/etc/kubernetes/other.yaml' }), file), (err: unknown) => err instanceof UnsafePathError && /only at "\/etc\/kubernetes\/other\.yaml"/.test(err.message) && /set kit\.encryptionProviderConfig/.test(err.hint ?? ''));
  assert.throws(() => checkKitTarget(kit({ encryptionProviderConfig: 'none' }), file), (err: unknown) => err instanceof UnsafePathError && /kit\.encryptionProviderConfig is none/.test(err.message));
});
