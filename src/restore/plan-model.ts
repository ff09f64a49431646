import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { KitRole, type StoredManifest } from '../archive/manifest.ts';
import type { SegmentManifest } from '../changes/manifest.ts';
import type { ReadEvents } from '../changes/replay-plan.ts';
import type { Config } from '../config/schema.ts';
import { BadRequestError, ConfigError } from '../errors/errors.ts';

/**
 * A restore plan: everything a restore of one backup will do on one node, computed before
 * anything is touched, so that it can be reviewed, dry-run, and applied with its confirmation
 * token. The plan is JSON (plan.json in the restore's state dir) and never changes once made.
 *
 * Paths in a plan are host paths (as on the node: `/var/lib/etcd`), except `self.etcdutl`,
 * which is the exact argv Lifeboat runs (its paths resolved under kit.hostRoot, or under the
 * dry-run root for a dry run).
 */

export const RESTORE_MODES = ['in-place', 'fresh-control-plane'] as const;
export type RestoreMode = (typeof RESTORE_MODES)[number];

/** In place, per node; `lifeboat restore apply --all` runs them across nodes in the safe order (orchestrate.ts). */
export const IN_PLACE_STEPS = [
  'fetch',
  'stop-apiserver',
  'stop-etcd',
  'restore-snapshot',
  'swap-data-dir',
  'start-etcd',
  'wait-quorum',
  'cleanup-leases',
  'start-apiserver',
  'done',
] as const;

/** On a new host with kubeadm installed. */
export const FRESH_STEPS = [
  'fetch',
  'place-files',
  'restore-snapshot',
  'swap-data-dir',
  'cleanup-leases',
  'kubeadm-config',
  'kubeadm-init',
  'wait-apiserver',
  'join-instructions',
  'done',
] as const;

export type InPlaceStep = (typeof IN_PLACE_STEPS)[number];
export type FreshStep = (typeof FRESH_STEPS)[number];
export type StepName = InPlaceStep | FreshStep;
export const STEP_NAMES: readonly StepName[] = [...new Set<StepName>([...IN_PLACE_STEPS, ...FRESH_STEPS])];

export function stepsOf(mode: RestoreMode): readonly StepName[] {
  return mode === 'in-place' ? IN_PLACE_STEPS : FRESH_STEPS;
}

/** etcd's `--initial-cluster`: `name=peerURL,...`. */
export function initialCluster(members: readonly MemberRef[]): string {
  return members.map((m) => `${m.name}=${m.peerURL}`).join(',');
}

const Timestamp = Type.String({ description: 'RFC 3339, UTC' });
const Uint64 = Type.String({ pattern: '^[0-9]{1,20}$', description: 'a uint64 as a decimal string' });
/** etcd member and Kubernetes node names: no `=` or `,` (they separate --initial-cluster). */
const MemberName = Type.String({ pattern: '^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$', description: 'the etcd member (and node) name' });
const PeerURL = Type.String({ pattern: '^https?://[^\\s/,=]+:[0-9]{1,5}/?$', description: 'scheme://host:port, e.g. https://10.0.0.1:2380' });
const ClusterToken = Type.String({ pattern: '^[A-Za-z0-9][-A-Za-z0-9_.]{0,127}$' });

/** A point in time to restore to (src/changes/replay-plan.ts ReplayTarget). */
export const PointTargetSchema = Type.Union([
  Type.Object({ revision: Type.String({ minLength: 1, description: 'an etcd revision' }) }, { additionalProperties: false }),
  Type.Object({ time: Type.String({ minLength: 1, description: 'RFC 3339: the last revision received at or before it' }) }, { additionalProperties: false }),
  Type.Object({ beforeDeletionOf: Type.String({ minLength: 1, description: 'an etcd key: just before its newest delete' }) }, { additionalProperties: false }),
]);

const MemberRefSchema = Type.Object(
  {
    name: MemberName,
    peerURL: PeerURL,
  },
  { additionalProperties: false },
);
export type MemberRef = Static<typeof MemberRefSchema>;

/** The body of `POST /v1/restores`. */
export const RestoreRequestSchema = Type.Object(
  {
    /**
     * A backup id, `latest`, or the newest backup made at or before a time; or a point in time
     * (the change log replayed onto the newest backup before it): a revision, a time, or just
     * before the newest delete of a key.
     */
    backup: Type.Union([
      Type.String({ minLength: 1 }),
      Type.Object({ before: Type.String({ minLength: 1, description: 'RFC 3339' }) }, { additionalProperties: false }),
      PointTargetSchema,
    ]),
    mode: Type.Union(RESTORE_MODES.map((m) => Type.Literal(m))),
    /** Every member of the restored cluster; default: the backup's members. */
    members: Type.Optional(Type.Array(MemberRefSchema, { minItems: 1, maxItems: 15 })),
    dryRun: Type.Optional(Type.Boolean({ default: false })),
    /** Which member this node is; default: the config's `node`. */
    node: Type.Optional(MemberName),
    /** Pinned so that every member of one restore shares it; default: a new random token. */
    clusterToken: Type.Optional(ClusterToken),
    /** Pinned so that every member of one restore shares it; default: computed (see computeBump). */
    bumpRevision: Type.Optional(Type.Integer({ minimum: 1, maximum: 1e15 })),
    /** The member that removes stale master leases; default: the first member. */
    leaseCleanupBy: Type.Optional(MemberName),
  },
  { additionalProperties: false },
);
export type RestoreRequest = Static<typeof RestoreRequestSchema>;

const PlannedFileSchema = Type.Object({
  path: Type.String(),
  role: KitRole,
  sha256: Type.String(),
  mode: Type.Integer(),
  size: Type.Integer(),
  /** What is at `path` on this host now. */
  existing: Type.Union([Type.Literal('absent'), Type.Literal('identical'), Type.Literal('differs')]),
});

const PlannedManifestSchema = Type.Object({
  path: Type.String(),
  action: Type.Union([Type.Literal('move-out'), Type.Literal('edit'), Type.Literal('put-back'), Type.Literal('write')]),
  detail: Type.String(),
});

export const DowntimePartSchema = Type.Object({
  what: Type.String(),
  seconds: Type.Number(),
  basis: Type.Union([Type.Literal('measured'), Type.Literal('assumed')]),
});

export const RestorePlanSchema = Type.Object(
  {
    id: Type.String({ description: 'restore-<time>-<random>' }),
    createdAt: Timestamp,
    cluster: Type.String(),
    mode: Type.Union(RESTORE_MODES.map((m) => Type.Literal(m))),
    dryRun: Type.Boolean(),
    /** This node's member name. */
    node: Type.String(),
    backupId: Type.String(),
    backup: Type.Object({
      revision: Uint64,
      createdAt: Timestamp,
      dbSize: Type.Integer(),
      archiveSize: Type.Integer(),
      keyCount: Type.Optional(Type.Integer()),
    }),
    /**
     * A point-in-time restore: the change log's events after the backup, up to `targetRevision`
     * of the old cluster, are replayed onto its snapshot when it is fetched, on every member the
     * same way. Absent for a restore of the backup itself.
     */
    pointInTime: Type.Optional(
      Type.Object({
        target: PointTargetSchema,
        targetRevision: Uint64,
        targetTime: Type.String(),
        segments: Type.Array(Type.Object({ segmentId: Type.String(), firstRevision: Uint64, lastRevision: Uint64 })),
        /** The TTL of the leases the change log names (config changes.replayLeaseTtlSeconds). */
        leaseTtlSeconds: Type.Integer(),
      }),
    ),
    /** Give it back to apply: proves the caller applies the plan it reviewed. 128 bits, hex. */
    confirmationToken: Type.String(),
    /** New for every restore: a restored member never talks to a member of the old cluster. */
    clusterToken: Type.String(),
    bumpRevision: Type.Integer(),
    /** The restored cluster starts at or above this revision: the backup's plus the bump. */
    targetRevision: Uint64,
    /** How bumpRevision was computed (computeBump). */
    bump: Type.Object({
      minimum: Type.Integer(),
      pinned: Type.Boolean(),
      estimatedRevisionsSinceBackup: Type.Integer(),
      revisionsPerSecond: Type.Optional(Type.Number()),
      liveRevision: Type.Optional(Uint64),
      formula: Type.String(),
    }),
    /** The members of the restored cluster (in fresh mode: this host alone). */
    members: Type.Array(MemberRefSchema),
    /** The one member that runs cleanup-leases. */
    leaseCleanupBy: Type.String(),
    /** Master leases (/registry/masterleases/<ip>) of these addresses are kept; others are removed. */
    keepLeaseAddresses: Type.Array(Type.String()),
    self: Type.Object({
      name: Type.String(),
      peerURL: Type.String(),
      /** In place: where this node's etcd member answers (from its manifest). */
      clientURL: Type.Optional(Type.String()),
      dataDir: Type.String(),
      /** Where etcdutl restores to before the swap. */
      restoreDir: Type.String(),
      /** `dir`: the data dir itself is renamed; `member`: its `member/` subdir (the data dir is a mount point). */
      swap: Type.Union([Type.Literal('dir'), Type.Literal('member')]),
      etcdutl: Type.Object({ command: Type.String(), args: Type.Array(Type.String()) }),
    }),
    files: Type.Array(PlannedFileSchema),
    manifests: Type.Array(PlannedManifestSchema),
    /** Moved aside, never deleted. */
    setAside: Type.Array(Type.Object({ from: Type.String(), to: Type.String(), what: Type.String() })),
    kubeadm: Type.Optional(
      Type.Object({
        command: Type.String(),
        /** Host path of the kubeadm config Lifeboat writes. */
        configPath: Type.String(),
        initArgs: Type.Array(Type.String()),
        advertiseAddress: Type.String(),
        /** nodeRegistration.criSocket of the InitConfiguration (restore.kubeadm.criSocket). */
        criSocket: Type.Optional(Type.String()),
        /** The other control-plane hosts, to join once this one serves. */
        joinLater: Type.Array(Type.String()),
      }),
    ),
    /** The restore's state dir (plan, journal, staged files). */
    staging: Type.String(),
    /** For a dry run: the temp dir that plays the host root. */
    dryRunRoot: Type.Optional(Type.String()),
    steps: Type.Array(Type.String()),
    expectedDowntimeSeconds: Type.Number(),
    /** If every wait runs to its configured limit. */
    worstCaseDowntimeSeconds: Type.Number(),
    downtime: Type.Array(DowntimePartSchema),
    warnings: Type.Array(Type.String()),
  },
  { additionalProperties: false },
);
export type RestorePlan = Static<typeof RestorePlanSchema>;

export type RestoreConfig = Pick<Config, 'cluster' | 'node' | 'kit' | 'restore' | 'tools' | 'daemon' | 'etcd' | 'changes'>;

/** What plan() reads besides the request. */
export interface PlanContext {
  catalog: { list(): Promise<StoredManifest[]>; get(id: string): Promise<StoredManifest>; resolve(ref: string): Promise<StoredManifest> };
  config: RestoreConfig;
  now: () => Date;
  /** The restore's state dir (local path). */
  stagingDir: (id: string) => string;
  /** The live cluster's revision, when it answers; asked for in-place plans only. */
  liveRevision?: () => Promise<string | undefined>;
  /** Whether a local path is a mount point (its device differs from its parent's). */
  isMountPoint?: (localPath: string) => Promise<boolean>;
  /** The committed change log (signatures and chain checked), for a point-in-time restore; absent without an identity. */
  changeLog?: () => Promise<{ segments: SegmentManifest[]; readEvents: ReadEvents }>;
}

/** A point-in-time restore on a node that cannot read the change log: it has no identity. */
export function noChangeLogIdentity(): ConfigError {
  return new ConfigError('/encryption/identityFile', 'a point-in-time restore reads the change log, and no identity to decrypt it is configured', {
    hint: 'set encryption.identityFile on the node that restores (as for any restore)',
  });
}

/** The request, checked against its schema; the first problem names its field. */
export function validateRequest(body: unknown): RestoreRequest {
  const input = Value.Default(RestoreRequestSchema, structuredClone(body ?? {}));
  const first = Value.Errors(RestoreRequestSchema, input).First();
  if (first) {
    const value = first.value === undefined ? '' : ` (got ${JSON.stringify(first.value)?.slice(0, 80)})`;
    throw new BadRequestError(first.path || '/', `${first.path || 'the body'}: ${first.message}${value}`);
  }
  return input as RestoreRequest;
}

export function checkUnique(members: MemberRef[]): void {
  const names = new Map<string, number>();
  const urls = new Map<string, number>();
  members.forEach((m, i) => {
    const url = new URL(m.peerURL);
    if (url.pathname !== '/' || url.search !== '' || url.username !== '') {
      throw new BadRequestError(`/members/${i}/peerURL`, `${m.peerURL} must be scheme://host:port, with no path`);
    }
    if (names.has(m.name)) throw new BadRequestError(`/members/${i}/name`, `member name ${m.name} appears twice (also /members/${names.get(m.name)}/name)`);
    if (urls.has(m.peerURL)) throw new BadRequestError(`/members/${i}/peerURL`, `peer URL ${m.peerURL} appears twice (also /members/${urls.get(m.peerURL)}/peerURL)`);
    names.set(m.name, i);
    urls.set(m.peerURL, i);
  });
}

/** An RFC 3339 time with its offset (`2026-11-24T03:30:00Z`, `...+01:00`); undefined for anything else. */
export function parseTime(text: string): Date | undefined {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(text)) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : new Date(t);
}
