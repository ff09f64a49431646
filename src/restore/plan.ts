import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { KitRole, type KitFile, type StoredManifest } from '../archive/manifest.ts';
import type { Config } from '../config/schema.ts';
import { BadRequestError, ConfigError, NotFoundError } from '../errors/errors.ts';
import { parseBackupId } from '../store/layout.ts';
import { APISERVER_MANIFEST, ETCD_MANIFEST, etcdFacts, localClientURL, StaticPod } from './manifests.ts';
import { checkKitTarget } from './kit-policy.ts';
import { isMountPoint } from './mounts.ts';

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
    /** A backup id, `latest`, or the newest backup made at or before a time. */
    backup: Type.Union([Type.String({ minLength: 1 }), Type.Object({ before: Type.String({ minLength: 1, description: 'RFC 3339' }) }, { additionalProperties: false })]),
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

const DowntimePartSchema = Type.Object({
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

export type RestoreConfig = Pick<Config, 'cluster' | 'node' | 'kit' | 'restore' | 'tools' | 'daemon' | 'etcd'>;

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
}

/** Kit roles a fresh control plane places on the host (kubeadm writes the static pod manifests itself; see createPlan for the ClusterConfiguration). */
const PLACED_ROLES: readonly string[] = ['pki', 'encryption-provider-config', 'cluster-configuration', 'extra'];

const DEFAULT_DATA_DIR = '/var/lib/etcd';
const PEER_PORT = 2380;

/**
 * Validates a request and computes the plan. Bad input is a BadRequestError naming the field
 * (`/members/1/peerURL`); an unknown backup a NotFoundError; host state that makes the mode
 * impossible a ConfigError naming the setting. Reads the host (the etcd manifest, the kit
 * targets) and the catalogue; changes nothing.
 */
export async function createPlan(body: unknown, ctx: PlanContext): Promise<RestorePlan> {
  const input = validateRequest(body);
  const { config } = ctx;
  const now = ctx.now();
  const warnings: string[] = [];
  const backups = await ctx.catalog.list();
  const backup = await resolveBackup(input.backup, backups, ctx.catalog);

  const id = `restore-${stamp(now)}-${randomBytes(3).toString('hex')}`;
  const staging = ctx.stagingDir(id);
  const dryRunRoot = input.dryRun ? path.join(staging, 'dry-root') : undefined;
  const hostRoot = config.kit.hostRoot;
  const onHost = (p: string) => path.join(hostRoot, p);
  const k8s = config.kit.kubernetesDir;
  const manifestsDir = config.restore.manifestsDir;

  // Members: the request's, or the backup's voting members.
  let members: MemberRef[];
  if (input.members) {
    members = input.members.map((m) => ({ name: m.name, peerURL: m.peerURL.replace(/\/$/, '') }));
  } else {
    members = [];
    for (const m of backup.etcd.members) {
      if (m.isLearner) {
        warnings.push(`backup member ${m.name || m.id} was a learner and is left out`);
        continue;
      }
      if (!m.name || !m.peerURLs[0]) {
        warnings.push(`backup member ${m.id} had not started (no name) and is left out`);
        continue;
      }
      members.push({ name: m.name, peerURL: m.peerURLs[0] });
    }
    // etcd lists members by id; by name is what a reader expects, and the same on every node.
    members.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (members.length === 0) throw new BadRequestError('/members', `backup ${backup.backupId} lists no voting member; give the members`);
  }
  checkUnique(members);

  const selfName = input.node ?? config.node;
  const bump = await planBump(input, backup, backups, ctx, now, warnings);
  const clusterToken = input.clusterToken ?? newClusterToken(backup.backupId);
  const targetRevision = (BigInt(backup.etcd.revision) + BigInt(bump.bumpRevision)).toString();
  const snapshotFile = path.join(staging, 'archive', 'etcd', 'snapshot.db');
  const localRoot = dryRunRoot ?? hostRoot;
  /** The plan's `self`: this member, its data dir, and the exact etcdutl argv that restores it for `cluster`. */
  const selfPart = (self: MemberRef, cluster: MemberRef[], dataDir: string, layout: DataDirLayout, clientURL?: string): RestorePlan['self'] => ({
    name: self.name,
    peerURL: self.peerURL,
    ...(clientURL === undefined ? {} : { clientURL }),
    dataDir,
    restoreDir: layout.restoreDir,
    swap: layout.swap,
    etcdutl: etcdutlArgv(config.tools.etcdutl, snapshotFile, self, cluster, clusterToken, bump.bumpRevision, path.join(localRoot, layout.restoreDir)),
  });
  const common = {
    id,
    createdAt: now.toISOString(),
    cluster: config.cluster,
    dryRun: input.dryRun ?? false,
    backupId: backup.backupId,
    backup: {
      revision: backup.etcd.revision,
      createdAt: backup.createdAt,
      dbSize: backup.etcd.dbSize,
      archiveSize: backup.archive.size,
      ...(backup.etcd.keyCount === undefined ? {} : { keyCount: backup.etcd.keyCount }),
    },
    confirmationToken: randomBytes(16).toString('hex'),
    clusterToken,
    bumpRevision: bump.bumpRevision,
    targetRevision,
    bump: bump.facts,
    staging,
    ...(dryRunRoot ? { dryRunRoot } : {}),
  };

  if (input.mode === 'in-place') {
    const selfIndex = members.findIndex((m) => m.name === selfName);
    const etcdManifest = path.posix.join(manifestsDir, ETCD_MANIFEST);
    const apiserverManifest = path.posix.join(manifestsDir, APISERVER_MANIFEST);
    let pod: StaticPod;
    try {
      pod = await StaticPod.read(onHost(etcdManifest), etcdManifest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ConfigError('/restore/manifestsDir', `${etcdManifest} does not exist: an in-place restore needs this node's etcd static pod manifest`, {
          hint: 'run it on a kubeadm control-plane node, set restore.manifestsDir and kit.hostRoot, or use mode fresh-control-plane',
        });
      }
      throw err;
    }
    const facts = etcdFacts(pod);
    if (selfIndex < 0) {
      const byManifest = facts.name !== undefined && members.some((m) => m.name === facts.name) ? ` (this node's etcd manifest says --name=${facts.name})` : '';
      throw new BadRequestError('/node', `this node, ${selfName}, is not among the members ${members.map((m) => m.name).join(', ')}${byManifest}`, {
        hint: 'pass node (the member this node is), or set node in the config',
      });
    }
    const self = members[selfIndex]!;
    if (facts.name !== undefined && facts.name !== self.name) warnings.push(`the etcd manifest says --name=${facts.name}; the restored member is named ${self.name}`);
    const manifestPeer = facts.initialAdvertisePeerURLs[0]?.toString().replace(/\/$/, '');
    if (manifestPeer !== undefined && manifestPeer !== self.peerURL) {
      warnings.push(`the etcd manifest advertises peer URL ${manifestPeer}, the plan gives ${self.peerURL}: the member must listen there (--listen-peer-urls is not changed)`);
    }
    if (facts.initialClusterToken !== undefined && facts.initialClusterToken === clusterToken) {
      throw new BadRequestError('/clusterToken', `${clusterToken} is the token of the running cluster (${etcdManifest}); a restored cluster needs a new one`);
    }
    if (facts.dataDir === undefined) throw new ConfigError('/restore/manifestsDir', `${etcdManifest} has no --data-dir flag`);
    const dataDir = config.restore.etcdDataDir === 'auto' ? facts.hostDataDir : config.restore.etcdDataDir;
    if (dataDir === undefined) {
      throw new ConfigError('/restore/etcdDataDir', `${etcdManifest}: --data-dir=${facts.dataDir} is on no hostPath volume, so the data would live inside the container`, {
        hint: 'fix the manifest (kubeadm mounts the etcd-data hostPath at the data dir) or set restore.etcdDataDir',
      });
    }
    if (facts.hostDataDir !== undefined && facts.hostDataDir !== dataDir) {
      warnings.push(`restore.etcdDataDir is ${dataDir} but the manifest's etcd-data hostPath holds ${facts.hostDataDir}; the manifest is pointed at ${dataDir}`);
    }
    const clientURL = localClientURL(facts)?.toString().replace(/\/$/, '');
    if (clientURL === undefined) throw new ConfigError('/restore/manifestsDir', `${etcdManifest} has no --listen-client-urls or --advertise-client-urls`);
    const hasApiserver = await exists(onHost(apiserverManifest));
    if (!hasApiserver) warnings.push(`${apiserverManifest} does not exist on this node: stop-apiserver and start-apiserver do nothing here`);
    const hasDataDir = await exists(onHost(dataDir));
    const mount = hasDataDir && (await (ctx.isMountPoint ?? isMountPoint)(onHost(dataDir)));
    const layout = dataDirLayout(dataDir, id, mount ? 'member' : 'dir');
    if (mount) warnings.push(`${dataDir} is a mount point: its member/ directory is swapped instead of the directory itself`);
    if (!hasDataDir) warnings.push(`${dataDir} does not exist on this node: there is nothing to set aside`);
    const leaseCleanupBy = input.leaseCleanupBy ?? members[0]!.name;
    if (!members.some((m) => m.name === leaseCleanupBy)) throw new BadRequestError('/leaseCleanupBy', `${leaseCleanupBy} is not a member`);
    const edits = [
      `--name=${self.name}`,
      `--initial-cluster=${initialCluster(members)}`,
      `--initial-cluster-token=${clusterToken}`,
      '--initial-cluster-state=new',
      `--initial-advertise-peer-urls=${self.peerURL}`,
      `--data-dir=${facts.dataDir} on hostPath ${dataDir}`,
    ];
    const stage = (name: string) => path.join(staging, 'manifests', name);
    const manifests: RestorePlan['manifests'] = [
      ...(hasApiserver ? [{ path: apiserverManifest, action: 'move-out' as const, detail: `to ${stage(APISERVER_MANIFEST)}; wait until the apiserver's secure port closes` }] : []),
      { path: etcdManifest, action: 'move-out', detail: `to ${stage(ETCD_MANIFEST)}; wait until etcd's client and peer ports close` },
      { path: etcdManifest, action: 'edit', detail: edits.join(' ') },
      { path: etcdManifest, action: 'put-back', detail: 'the edited manifest; wait until the member serves, then for a healthy quorum' },
      ...(hasApiserver ? [{ path: apiserverManifest, action: 'put-back' as const, detail: 'unchanged; wait for /readyz' }] : []),
    ];
    const plan: RestorePlan = {
      ...common,
      mode: 'in-place',
      node: self.name,
      members,
      leaseCleanupBy,
      keepLeaseAddresses: leaseAddresses(members, config.restore.advertiseAddress),
      self: selfPart(self, members, dataDir, layout, clientURL),
      files: [],
      manifests,
      setAside: [{ from: layout.live, to: layout.aside, what: 'the old etcd data' }],
      steps: [...IN_PLACE_STEPS],
      ...downtime('in-place', backup, config, members.length),
      warnings,
    };
    return Value.Parse(RestorePlanSchema, plan);
  }

  // fresh-control-plane
  const clusterConfig = backup.kit.files.find((f) => f.role === 'cluster-configuration');
  if (!clusterConfig) {
    throw new BadRequestError('/mode', `backup ${backup.backupId} holds no kubeadm ClusterConfiguration (${config.kit.clusterConfiguration} was missing when it was made); fresh-control-plane needs one`, {
      hint: 'restore in place, or pick a backup whose kit has the ClusterConfiguration',
    });
  }
  for (const pki of ['pki/ca.crt', 'pki/ca.key', 'pki/etcd/ca.crt', 'pki/etcd/ca.key']) {
    if (!backup.kit.files.some((f) => f.path === path.posix.join(k8s, pki))) {
      throw new BadRequestError('/backup', `backup ${backup.backupId} lacks ${path.posix.join(k8s, pki)} in its kit; a fresh control plane needs the cluster's CAs`);
    }
  }
  const named = members.find((m) => m.name === selfName);
  const advertise = config.restore.advertiseAddress ?? (named ? new URL(named.peerURL).hostname.replace(/^\[|\]$/g, '') : undefined);
  if (advertise === undefined) {
    throw new BadRequestError('/members', `this host (${selfName}) is not among the members ${members.map((m) => m.name).join(', ')}, and restore.advertiseAddress is not set`, {
      hint: `add {name: "${selfName}", peerURL: "https://<this host's address>:${PEER_PORT}"} to members, or set restore.advertiseAddress`,
    });
  }
  const self: MemberRef = named ?? { name: selfName, peerURL: `https://${isIP(advertise) === 6 ? `[${advertise}]` : advertise}:${PEER_PORT}` };
  const dataDir = config.restore.etcdDataDir === 'auto' ? DEFAULT_DATA_DIR : config.restore.etcdDataDir;
  // A data dir that is a mount point (a dedicated disk) cannot be renamed: its member/ is swapped.
  const mount = (await exists(onHost(dataDir))) && (await (ctx.isMountPoint ?? isMountPoint)(onHost(dataDir)));
  const layout = dataDirLayout(dataDir, id, mount ? 'member' : 'dir');
  if (mount) warnings.push(`${dataDir} is a mount point: the snapshot is restored inside it and its member/ directory is swapped`);
  const setAside: RestorePlan['setAside'] = [];
  if (mount ? await exists(onHost(layout.live)) : await nonEmptyDir(onHost(dataDir))) setAside.push({ from: layout.live, to: layout.aside, what: 'an etcd data dir already on this host' });
  const files: RestorePlan['files'] = [];
  // A ClusterConfiguration read from the kubeadm-config ConfigMap goes to kubeadm init only: a
  // file kubeadm never wrote would win over the ConfigMap in later backups, and go stale at the
  // next `kubeadm upgrade`.
  const placed = backup.kit.files.filter((k) => PLACED_ROLES.includes(k.role) && !(k.role === 'cluster-configuration' && k.source?.from === 'configmap'));
  for (const f of placed) {
    checkKitTarget(config.kit, f);
    const existing = await compareExisting(onHost(f.path), f);
    files.push({ path: f.path, role: f.role, sha256: f.sha256, mode: f.mode, size: f.size, existing });
    if (existing === 'differs') setAside.push({ from: f.path, to: `${f.path}.lifeboat-aside-${id}`, what: `a different ${f.role} file already on this host` });
  }
  for (const name of [ETCD_MANIFEST, APISERVER_MANIFEST]) {
    if (await exists(onHost(path.posix.join(manifestsDir, name)))) {
      warnings.push(`${path.posix.join(manifestsDir, name)} already exists: kubeadm init refuses to overwrite it; run \`kubeadm reset\` first or restore in place`);
    }
  }
  const kubeadmConfig = path.posix.join(k8s, 'lifeboat', `kubeadm-${id}.yaml`);
  const joinLater = members.filter((m) => m.name !== self.name).map((m) => m.name);
  const plan: RestorePlan = {
    ...common,
    mode: 'fresh-control-plane',
    node: self.name,
    members: [self],
    leaseCleanupBy: self.name,
    keepLeaseAddresses: leaseAddresses([self], advertise),
    self: selfPart(self, [self], dataDir, layout),
    files,
    manifests: [
      { path: kubeadmConfig, action: 'write', detail: `InitConfiguration (${self.name}, ${advertise}) + the kit's ClusterConfiguration with etcd.local.dataDir ${dataDir}` },
      { path: path.posix.join(manifestsDir, ETCD_MANIFEST), action: 'write', detail: 'by kubeadm init, on the restored data dir' },
      { path: path.posix.join(manifestsDir, APISERVER_MANIFEST), action: 'write', detail: 'by kubeadm init' },
    ],
    setAside,
    kubeadm: {
      command: config.tools.kubeadm,
      configPath: kubeadmConfig,
      initArgs: kubeadmInitArgs(kubeadmConfig, dataDir, config.restore.kubeadm.ignorePreflightErrors),
      advertiseAddress: advertise,
      ...(config.restore.kubeadm.criSocket === undefined ? {} : { criSocket: config.restore.kubeadm.criSocket }),
      joinLater,
    },
    steps: [...FRESH_STEPS],
    ...downtime('fresh-control-plane', backup, config, 1),
    warnings,
  };
  return Value.Parse(RestorePlanSchema, plan);
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

function checkUnique(members: MemberRef[]): void {
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

/** `latest`, an id, or `{before}`: the newest backup made at or before that time. */
export async function resolveBackup(ref: RestoreRequest['backup'], backups: StoredManifest[], catalog: PlanContext['catalog']): Promise<StoredManifest> {
  if (typeof ref === 'string') {
    // Latest as the catalogue decides it: never a backup dated in the future.
    if (ref === 'latest') return catalog.resolve('latest');
    if (!parseBackupId(ref)) {
      throw new BadRequestError('/backup', `"${ref}" is not a backup id (like 20261124T033000.123Z-r12345), "latest" or {before: <RFC 3339 time>}`);
    }
    return catalog.get(ref);
  }
  const before = parseTime(ref.before);
  if (before === undefined) throw new BadRequestError('/backup/before', `"${ref.before}" is not an RFC 3339 time like 2026-11-24T03:30:00Z`);
  const found = backups.find((b) => Date.parse(b.createdAt) <= before.getTime());
  if (!found) throw new NotFoundError(`no backup was made at or before ${before.toISOString()}`, { hint: 'run `lifeboat list` to see the backups' });
  return found;
}

/** An RFC 3339 time with its offset (`2026-11-24T03:30:00Z`, `...+01:00`); undefined for anything else. */
export function parseTime(text: string): Date | undefined {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i.test(text)) return undefined;
  const t = Date.parse(text);
  return Number.isNaN(t) ? undefined : new Date(t);
}

export interface BumpInput {
  minimum: number;
  backup: { revision: string; createdAt: string };
  /** The catalogue, newest first. */
  recent: { revision: string; createdAt: string }[];
  now: Date;
  /** The live cluster's revision, when known. */
  liveRevision?: string | undefined;
}

export interface BumpResult {
  bumpRevision: number;
  estimatedRevisionsSinceBackup: number;
  revisionsPerSecond: number | undefined;
}

/** How many of the newest backups the revision rate is measured over. */
const RATE_WINDOW = 10;

/**
 * The revision bump, so that the restored cluster's revision is above every revision a client
 * has seen (a revision going backwards breaks every informer and watch cache):
 *
 *   rate      = (rev(newest) − rev(oldest of the newest RATE_WINDOW backups)) / (their time apart)
 *   liveEst   = rev(newest) + rate × (now − time(newest))       the cluster's revision now, estimated
 *   since     = max(liveEst, live revision if it answers) − rev(backup)
 *   bump      = max(restore.minRevisionBump, ⌈2 × since⌉)
 *
 * Measuring from the newest backup (not only the restored one) keeps earlier jumps (a previous
 * restore's bump) in the estimate; the factor 2 covers a write burst since the last backup and
 * the time between plan and apply. With fewer than two backups the rate is unknown and the
 * minimum applies (a warning says so). stop-etcd checks the live revision again before it
 * stops the last running member.
 */
export function computeBump(input: BumpInput): BumpResult {
  const rev = (r: string) => {
    const n = Number(r);
    if (!Number.isSafeInteger(n)) throw new BadRequestError('/backup', `revision ${r} is beyond what this computation handles (2^53)`);
    return n;
  };
  const time = (t: string) => Date.parse(t) / 1000;
  const window = input.recent.slice(0, RATE_WINDOW);
  const newest = window[0];
  let rate: number | undefined;
  if (newest) {
    const oldest = [...window].reverse().find((b) => time(b.createdAt) < time(newest.createdAt));
    if (oldest) {
      const r = (rev(newest.revision) - rev(oldest.revision)) / (time(newest.createdAt) - time(oldest.createdAt));
      if (Number.isFinite(r) && r >= 0) rate = r;
    }
  }
  const base = rev(input.backup.revision);
  let liveEstimate = base;
  if (newest) {
    const elapsed = Math.max(0, input.now.getTime() / 1000 - time(newest.createdAt));
    liveEstimate = Math.max(base, rev(newest.revision) + (rate ?? 0) * elapsed);
  }
  if (input.liveRevision !== undefined) liveEstimate = Math.max(liveEstimate, rev(input.liveRevision));
  const since = Math.max(0, Math.ceil(liveEstimate - base));
  return {
    bumpRevision: Math.max(input.minimum, Math.ceil(2 * since)),
    estimatedRevisionsSinceBackup: since,
    revisionsPerSecond: rate,
  };
}

async function planBump(input: RestoreRequest, backup: StoredManifest, backups: StoredManifest[], ctx: PlanContext, now: Date, warnings: string[]) {
  const minimum = ctx.config.restore.minRevisionBump;
  const live = input.mode === 'in-place' && ctx.liveRevision ? await ctx.liveRevision().catch(() => undefined) : undefined;
  if (input.mode === 'in-place' && live === undefined) warnings.push('the live etcd did not answer, so the bump is estimated from the catalogue alone');
  const computed = computeBump({
    minimum,
    backup: { revision: backup.etcd.revision, createdAt: backup.createdAt },
    recent: backups.map((b) => ({ revision: b.etcd.revision, createdAt: b.createdAt })),
    now,
    liveRevision: live,
  });
  if (computed.revisionsPerSecond === undefined) warnings.push('fewer than two backups: the revision rate is unknown, so the bump is the configured minimum unless the live cluster answered');
  let bumpRevision = computed.bumpRevision;
  if (input.bumpRevision !== undefined) {
    if (input.bumpRevision < minimum) {
      throw new BadRequestError('/bumpRevision', `${input.bumpRevision} is below restore.minRevisionBump (${minimum})`);
    }
    if (input.bumpRevision < computed.bumpRevision) {
      warnings.push(`the pinned bump ${input.bumpRevision} is below this node's estimate ${computed.bumpRevision}`);
    }
    bumpRevision = input.bumpRevision;
  }
  return {
    bumpRevision,
    facts: {
      minimum,
      pinned: input.bumpRevision !== undefined,
      estimatedRevisionsSinceBackup: computed.estimatedRevisionsSinceBackup,
      ...(computed.revisionsPerSecond === undefined ? {} : { revisionsPerSecond: Math.round(computed.revisionsPerSecond * 1000) / 1000 }),
      ...(live === undefined ? {} : { liveRevision: live }),
      formula: `max(restore.minRevisionBump, ceil(2 × (max(rev(newest) + rate × age(newest), live revision) − rev(backup)))), rate over the newest ${RATE_WINDOW} backups`,
    },
  };
}

/** `lifeboat-<backup time>-r<revision>-<random>`: new for every restore, and says where it came from. */
function newClusterToken(backupId: string): string {
  return `lifeboat-${backupId.toLowerCase().replace(/[^a-z0-9-]/g, '')}-${randomBytes(4).toString('hex')}`;
}

function etcdutlArgv(command: string, snapshot: string, self: MemberRef, members: MemberRef[], token: string, bump: number, dataDir: string): { command: string; args: string[] } {
  return {
    command,
    args: [
      'snapshot', 'restore', snapshot,
      '--name', self.name,
      '--initial-cluster', initialCluster(members),
      '--initial-cluster-token', token,
      '--initial-advertise-peer-urls', self.peerURL,
      '--bump-revision', String(bump),
      '--mark-compacted',
      '--data-dir', dataDir,
    ],
  };
}

/**
 * kubeadm's preflight check for a non-empty etcd data dir is named after its path; `ignore`
 * (restore.kubeadm.ignorePreflightErrors) adds more checks by name.
 */
export function kubeadmInitArgs(configPath: string, dataDir: string, ignore: readonly string[] = []): string[] {
  const checks = [...new Set([`DirAvailable-${dataDir.replaceAll('/', '-')}`, ...ignore])];
  return ['init', '--config', configPath, `--ignore-preflight-errors=${checks.join(',')}`];
}

export interface DataDirLayout {
  swap: 'dir' | 'member';
  /** Where etcdutl restores to. */
  restoreDir: string;
  /** What is swapped: the live data (dir or its member/), the restored counterpart, and where the old one goes. */
  live: string;
  incoming: string;
  aside: string;
  failed: string;
}

/**
 * The paths of a restore's data dir swap. Normally the data dir itself is renamed aside and the
 * restored dir renamed into place. A data dir that is a mount point (a dedicated disk, as etcd
 * operators often do) cannot be renamed, so its `member/` subdir is swapped instead, with the
 * restore made inside the mount (etcd logs and ignores the other entries of its data dir).
 */
export function dataDirLayout(dataDir: string, id: string, swap: 'dir' | 'member'): DataDirLayout {
  if (swap === 'dir') {
    const restoreDir = `${dataDir}.lifeboat-restore-${id}`;
    return {
      swap,
      restoreDir,
      live: dataDir,
      incoming: restoreDir,
      aside: `${dataDir}.lifeboat-aside-${id}`,
      failed: `${dataDir}.lifeboat-failed-${id}`,
    };
  }
  const restoreDir = path.posix.join(dataDir, `lifeboat-restore-${id}`);
  return {
    swap,
    restoreDir,
    live: path.posix.join(dataDir, 'member'),
    incoming: path.posix.join(restoreDir, 'member'),
    aside: path.posix.join(dataDir, `member.lifeboat-aside-${id}`),
    failed: path.posix.join(dataDir, `member.lifeboat-failed-${id}`),
  };
}

/**
 * Master leases are keyed by the apiserver's advertise address, which kubeadm also uses for
 * etcd's peer URL: the peer URL hosts (and restore.advertiseAddress) are the addresses kept.
 */
function leaseAddresses(members: MemberRef[], advertise: string | undefined): string[] {
  const hosts = members.map((m) => new URL(m.peerURL).hostname.replace(/^\[|\]$/g, ''));
  if (advertise) hosts.push(advertise);
  return [...new Set(hosts)];
}

/**
 * Figures from /work/shared/notes/measured.md (measured) and typical kubelet and kube-apiserver
 * behaviour (assumed). The expected downtime is the time the Kubernetes API is unavailable.
 */
const DOWNTIME = {
  /** etcdutl snapshot restore (3.5), seconds per GB of database: measured. */
  restorePerGB: 2.7,
  /** A restored etcd serves this long after it starts: measured. */
  etcdServes: 1.7,
  /** The kubelet notices a manifest change (inotify) and stops a static pod gracefully: assumed. */
  kubeletStop: 10,
  /** The kubelet notices a manifest and starts the container: assumed. */
  kubeletStart: 5,
  /** kube-apiserver becomes ready (caches filled) once etcd serves: assumed. */
  apiserverReady: 30,
  /** kubeadm init on a host with the images present, up to the static pods: assumed. */
  kubeadmInit: 60,
} as const;

function downtime(mode: RestoreMode, backup: StoredManifest, config: RestoreConfig, members: number) {
  const gb = backup.etcd.dbSize / 1e9;
  const restore = Math.max(1, Math.round(DOWNTIME.restorePerGB * gb * 10) / 10);
  const restorePart = { what: `etcdutl snapshot restore of ${Math.round(gb * 1000) / 1000} GB (${DOWNTIME.restorePerGB} s/GB)`, seconds: restore, basis: 'measured' } as const;
  const parts: Static<typeof DowntimePartSchema>[] =
    mode === 'in-place'
      ? [
          { what: 'kubelet stops kube-apiserver, then etcd', seconds: 2 * DOWNTIME.kubeletStop, basis: 'assumed' },
          restorePart,
          { what: 'kubelet starts the restored etcd', seconds: DOWNTIME.kubeletStart, basis: 'assumed' },
          { what: `the restored etcd serves (${members} member${members === 1 ? '' : 's'})`, seconds: DOWNTIME.etcdServes, basis: 'measured' },
          { what: 'kubelet starts kube-apiserver and it becomes ready', seconds: DOWNTIME.kubeletStart + DOWNTIME.apiserverReady, basis: 'assumed' },
        ]
      : [
          restorePart,
          { what: 'lease cleanup on a throwaway etcd', seconds: DOWNTIME.etcdServes + 1, basis: 'measured' },
          { what: 'kubeadm init up to the static pods', seconds: DOWNTIME.kubeadmInit, basis: 'assumed' },
          { what: 'kube-apiserver becomes ready', seconds: DOWNTIME.apiserverReady, basis: 'assumed' },
        ];
  const expected = Math.round(parts.reduce((n, p) => n + p.seconds, 0));
  const waits = mode === 'in-place'
    ? 2 * config.restore.etcdWaitSeconds + config.restore.etcdWaitSeconds + 2 * config.restore.apiserverWaitSeconds
    : config.restore.etcdWaitSeconds + 3 * config.restore.apiserverWaitSeconds;
  return { expectedDowntimeSeconds: expected, worstCaseDowntimeSeconds: Math.round(restore + waits), downtime: parts };
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

async function nonEmptyDir(p: string): Promise<boolean> {
  return readdir(p).then((e) => e.length > 0, () => false);
}

async function compareExisting(local: string, file: KitFile): Promise<'absent' | 'identical' | 'differs'> {
  let content: Buffer;
  try {
    content = await readFile(local);
  } catch {
    return 'absent';
  }
  return createHash('sha256').update(content).digest('hex') === file.sha256 ? 'identical' : 'differs';
}

function stamp(d: Date): string {
  return d.toISOString().replaceAll('-', '').replaceAll(':', '');
}
