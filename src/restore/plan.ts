import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { StoredManifest } from '../archive/manifest.ts';
import type { ReplayPlan, ReplayTarget } from '../changes/replay-plan.ts';
import { planReplay } from '../changes/replay-plan.ts';
import { BadRequestError, NotFoundError } from '../errors/errors.ts';
import { parseBackupId } from '../store/layout.ts';
import { planBump } from './plan-bump.ts';
import { planFresh } from './plan-fresh.ts';
import { planInPlace } from './plan-in-place.ts';
import { checkUnique, noChangeLogIdentity, parseTime, validateRequest, type MemberRef, type PlanContext, type RestorePlan, type RestoreRequest } from './plan-model.ts';
import { etcdutlArgv, newClusterToken, stamp, type PlanBase } from './plan-parts.ts';

// The plan's model (schemas, step names, request validation) and its parts, for the modules
// that import them from here.
export * from './plan-model.ts';
export { computeBump, type BumpInput, type BumpResult } from './plan-bump.ts';
export { dataDirLayout, kubeadmInitArgs, type DataDirLayout } from './plan-parts.ts';

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
  const point = pointOf(input.backup);
  const replay = point ? await planPoint(point, backups, ctx) : undefined;
  const backup = replay ? await ctx.catalog.get(replay.backupId) : await resolveBackup(input.backup, backups, ctx.catalog);

  const id = `restore-${stamp(now)}-${randomBytes(3).toString('hex')}`;
  const staging = ctx.stagingDir(id);
  const dryRunRoot = input.dryRun ? path.join(staging, 'dry-root') : undefined;
  const hostRoot = config.kit.hostRoot;
  const onHost = (p: string) => path.join(hostRoot, p);

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
  const selfPart: PlanBase['selfPart'] = (self, cluster, dataDir, layout, clientURL) => ({
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
    ...(replay && point
      ? { pointInTime: { target: point, targetRevision: replay.targetRevision, targetTime: replay.targetTime, segments: replay.segments, leaseTtlSeconds: config.changes.replayLeaseTtlSeconds } }
      : {}),
    confirmationToken: randomBytes(16).toString('hex'),
    clusterToken,
    bumpRevision: bump.bumpRevision,
    targetRevision,
    bump: bump.facts,
    staging,
    ...(dryRunRoot ? { dryRunRoot } : {}),
  };
  const base: PlanBase = { input, ctx, config, backup, members, selfName, id, staging, clusterToken, warnings, onHost, common, selfPart };
  return input.mode === 'in-place' ? planInPlace(base) : planFresh(base);
}

/** The point in time a backup reference names, if it names one (a revision, a time, before a key's deletion). */
export function pointOf(ref: RestoreRequest['backup']): ReplayTarget | undefined {
  return typeof ref === 'object' && !('before' in ref) ? ref : undefined;
}

/** The replay a point-in-time restore runs: the backup it starts from, the segments, the exact revision. */
async function planPoint(point: ReplayTarget, backups: StoredManifest[], ctx: PlanContext): Promise<ReplayPlan> {
  if (!ctx.changeLog) throw noChangeLogIdentity();
  const log = await ctx.changeLog();
  return planReplay(point, log.segments, backups, log.readEvents, '/backup');
}

/** `latest`, an id, or `{before}`: the newest backup made at or before that time. A point in time is planned by createPlan. */
export async function resolveBackup(ref: RestoreRequest['backup'], backups: StoredManifest[], catalog: PlanContext['catalog']): Promise<StoredManifest> {
  if (typeof ref === 'string') {
    // Latest as the catalogue decides it: never a backup dated in the future.
    if (ref === 'latest') return catalog.resolve('latest');
    if (!parseBackupId(ref)) {
      throw new BadRequestError('/backup', `"${ref}" is not a backup id (like 20261124T033000.123Z-r12345), "latest" or {before: <RFC 3339 time>}`);
    }
    return catalog.get(ref);
  }
  if (!('before' in ref)) throw new BadRequestError('/backup', 'a point in time is not a backup: plan the restore to find the backup it starts from');
  const before = parseTime(ref.before);
  if (before === undefined) throw new BadRequestError('/backup/before', `"${ref.before}" is not an RFC 3339 time like 2026-11-24T03:30:00Z`);
  const found = backups.find((b) => Date.parse(b.createdAt) <= before.getTime());
  if (!found) throw new NotFoundError(`no backup was made at or before ${before.toISOString()}`, { hint: 'run `lifeboat list` to see the backups' });
  return found;
}
