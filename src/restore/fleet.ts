import { describe, samePoint, type ReplayTarget } from '../changes/replay-plan.ts';
import { BadRequestError, ConflictError, LifeboatError, NotFoundError } from '../errors/errors.ts';
import type { RestoreView } from './engine.ts';
import { stepStarted } from './journal.ts';
import { parseTime, type MemberRef, type RestorePlan, type RestoreRequest } from './plan.ts';

/**
 * The policy of a restore across every member (`lifeboat restore apply --all` and
 * `rollback --all`): which backup every member restores, which earlier restore is resumed, how
 * the other members' plans are made so that all form one cluster, and which restores a rollback
 * covers. The CLI (and any other driver) talks to each member's daemon through MemberDaemon and
 * prints; the phases themselves are orchestrate.ts's.
 */

/** What the fleet asks of one member's daemon; the API client is one. */
export interface MemberDaemon {
  readonly url: string;
  /** The same credentials, another member's daemon. */
  withUrl(url: string): MemberDaemon;
  backup(ref: string): Promise<{ manifest: { backupId: string } }>;
  backups(options: { limit?: number; before?: string }): Promise<{ manifest: { backupId: string } }[]>;
  restores(): Promise<RestoreView[]>;
  restore(id: string): Promise<RestoreView>;
  planRestore(body: RestoreRequest): Promise<{ plan: RestorePlan }>;
}

/** One member of the restore: its name, its daemon, and its plan there. */
export interface FleetNode<D extends MemberDaemon = MemberDaemon> {
  name: string;
  api: D;
  plan: RestorePlan;
}

/** Where each member's daemon answers: the given URL by name, else the host of its peer URL at `port`. */
export function memberUrl(given: ReadonlyMap<string, string>, port: string): (member: MemberRef) => string {
  return (m) => given.get(m.name) ?? `https://${new URL(m.peerURL).hostname}:${port}`;
}

/** The backup id a reference names, asked of one daemon, so that every member plans the same backup. */
export async function resolveBackupId(api: MemberDaemon, ref: RestoreRequest['backup']): Promise<string> {
  if (typeof ref === 'string') return (await api.backup(ref)).manifest.backupId;
  if (!('before' in ref)) {
    throw new BadRequestError('--backup', 'restore apply --all takes a backup (--backup or --before); a point in time is planned through the API on each member', {
      hint: 'see the runbook, "Restore to a point in time"',
    });
  }
  const at = parseTime(ref.before);
  if (at === undefined) throw new BadRequestError('--before', `"${ref.before}" is not an RFC 3339 time like 2026-11-24T03:30:00Z`);
  // GET /v1/backups?before= keeps backups made strictly before; "at or before" is one millisecond more.
  const [found] = await api.backups({ limit: 1, before: new Date(at.getTime() + 1).toISOString() });
  if (!found) throw new NotFoundError(`no backup was made at or before ${at.toISOString()}`, { hint: 'lifeboat list shows the backups' });
  return found.manifest.backupId;
}

/**
 * Which restore an earlier `apply --all` left: of a backup (`pointInTime: false`: only restores
 * of the backup itself, not of a point after it), or of a point in time (the same target).
 */
export type StartedRestore = { backupId: string; pointInTime?: false } | { point: ReplayTarget };

/**
 * The restore of `of` an earlier `apply --all` left on a daemon: the newest in-place restore (not
 * a dry run, not rolled back) with a step started. Plans never started are leftovers, harmless,
 * and skipped.
 */
export async function findStarted(api: MemberDaemon, of: StartedRestore): Promise<RestoreView | undefined> {
  const matches = (plan: RestoreView['plan']): boolean => {
    if ('point' in of) return plan.pointInTime !== undefined && samePoint(plan.pointInTime.target, of.point);
    return plan.backupId === of.backupId && !(of.pointInTime === false && plan.pointInTime);
  };
  const views = (await api.restores())
    .filter((v) => !v.plan.dryRun && v.plan.mode === 'in-place' && matches(v.plan) && v.journal.rollback === undefined)
    .filter((v) => v.plan.steps.some((s) => stepStarted(v.journal, s)));
  return views.at(-1);
}

/** What `of` names, for messages. */
export function describeStarted(of: StartedRestore): string {
  return 'point' in of ? `the restore to ${describe(of.point)}` : `the restore of ${of.backupId}`;
}

/** Plans on member `name`'s daemon (undefined: whichever member that daemon is), telling `say` and the plan's warnings. */
export async function planOn<D extends MemberDaemon>(api: D, name: string | undefined, body: RestoreRequest, say: (line: string) => void): Promise<FleetNode<D>> {
  const { plan } = await api.planRestore(body);
  const node = name ?? plan.node;
  say(`${node}: planned ${plan.id} on ${api.url}`);
  for (const w of plan.warnings) say(`${node}: warning: ${w}`);
  return { name: node, api, plan };
}

/**
 * Every member's plan, the first one's given: on each other member's daemon, the restore with
 * the first plan's cluster token (resumed), else a new plan with the first one's choices pinned
 * (backup, members, token, bump, lease cleanup), so that all restore one cluster. An error
 * names the member it came from.
 */
export async function planMembers<D extends MemberDaemon>(first: FleetNode<D>, urlOf: (m: MemberRef) => string, say: (line: string) => void): Promise<FleetNode<D>[]> {
  const { plan } = first;
  const others = plan.members.filter((m) => m.name !== plan.node);
  const rest = await Promise.all(
    others.map(async (m): Promise<FleetNode<D>> => {
      const api = first.api.withUrl(urlOf(m)) as D;
      const existing = (await api.restores()).find((v) => v.plan.clusterToken === plan.clusterToken && v.journal.rollback === undefined);
      if (existing) {
        say(`${m.name}: resuming ${existing.plan.id} (${existing.state}) on ${api.url}`);
        return { name: m.name, api, plan: existing.plan };
      }
      return planOn(api, m.name, {
        // A point in time: the exact revision the first member replays to, so that every member replays the same events.
        backup: plan.pointInTime ? { revision: plan.pointInTime.targetRevision } : plan.backupId,
        mode: 'in-place',
        members: plan.members,
        clusterToken: plan.clusterToken,
        bumpRevision: plan.bumpRevision,
        leaseCleanupBy: plan.leaseCleanupBy,
      }, say);
    }).map((p, i) => p.catch((err: unknown) => {
      throw err instanceof LifeboatError ? new LifeboatError(err.code, `${others[i]!.name}: ${err.message}`, err.hint ? { hint: err.hint } : {}) : err;
    })),
  );
  return [first, ...rest];
}

/**
 * The restores a `rollback --all` of `of` covers: the started one on the first daemon,
 * and on every other member's daemon the one with its cluster token (a member without one is
 * told to `say` and left out). A ConflictError when nothing was started; `checkMembers` sees
 * the members before any other daemon is asked.
 */
export async function rollbackTargets<D extends MemberDaemon>(firstApi: D, of: StartedRestore, urlOf: (m: MemberRef) => string, say: (line: string) => void, checkMembers: (members: MemberRef[]) => void = () => undefined): Promise<FleetNode<D>[]> {
  const found = await findStarted(firstApi, of);
  if (!found) throw new ConflictError(`${describeStarted(of)} touched nothing on ${firstApi.url}, or there is none; there is nothing to roll back`, { hint: 'lifeboat restore list shows the restores of one node' });
  checkMembers(found.plan.members);
  const nodes: FleetNode<D>[] = [{ name: found.plan.node, api: firstApi, plan: found.plan }];
  for (const m of found.plan.members.filter((x) => x.name !== found.plan.node)) {
    const api = firstApi.withUrl(urlOf(m)) as D;
    const view = (await api.restores()).find((v) => v.plan.clusterToken === found.plan.clusterToken);
    if (view) nodes.push({ name: m.name, api, plan: view.plan });
    else say(`${m.name}: no restore with cluster token ${found.plan.clusterToken} on ${api.url}; nothing to roll back there`);
  }
  return nodes;
}
