import { IN_PLACE_STEPS, type RestorePlan } from '../../src/restore/plan.ts';

/** An in-place restore plan of one member, cp-1 on 10.0.0.1, of a backup at revision 100; `over` replaces fields. */
export function samplePlan(over: Partial<RestorePlan> = {}): RestorePlan {
  return {
    id: 'restore-20261124T040000.000Z-abcdef',
    createdAt: '2026-11-24T04:00:00.000Z',
    cluster: 'it',
    mode: 'in-place',
    dryRun: false,
    node: 'cp-1',
    backupId: '20261124T030000.000Z-r100',
    backup: { revision: '100', createdAt: '2026-11-24T03:00:00.000Z', dbSize: 1, archiveSize: 1 },
    confirmationToken: '0'.repeat(32),
    clusterToken: 'tok',
    bumpRevision: 1000,
    targetRevision: '1100',
    bump: { minimum: 1000, pinned: false, estimatedRevisionsSinceBackup: 0, formula: 'f' },
    members: [{ name: 'cp-1', peerURL: 'https://10.0.0.1:2380' }],
    leaseCleanupBy: 'cp-1',
    keepLeaseAddresses: ['10.0.0.1'],
    self: { name: 'cp-1', peerURL: 'https://10.0.0.1:2380', dataDir: '/var/lib/etcd', restoreDir: '/var/lib/etcd.x', swap: 'dir', etcdutl: { command: 'etcdutl', args: [] } },
    files: [],
    manifests: [],
    setAside: [],
    staging: '/tmp/x',
    steps: [...IN_PLACE_STEPS],
    expectedDowntimeSeconds: 1,
    worstCaseDowntimeSeconds: 2,
    downtime: [],
    warnings: [],
    ...over,
  };
}
