import { isDeepStrictEqual } from 'node:util';
import { BadRequestError } from '../errors/errors.ts';
import { errorInfo } from '../errors/errors.ts';
import type { ErrorInfo } from './journal.ts';
import type { InPlaceStep, RestorePlan } from './plan.ts';

/**
 * `lifeboat restore apply --all`: every member's restore, across nodes, in the safe order.
 *
 *   0. fetch and check the backup everywhere      (nothing live is touched before all succeed)
 *   1. stop the apiservers everywhere              (no client writes while etcd goes away)
 *   2. stop etcd everywhere
 *   3. restore every member (and swap the data dirs)
 *   4. start etcd everywhere
 *   5. wait for a healthy quorum at the target revision
 *   6. clean stale master leases (on the one marked member; the others pass)
 *   7. start the apiservers everywhere
 *   8. report
 *
 * A phase runs on all nodes at once and the next starts only when every node finished it.
 * Each node is driven through `applyThrough`, which the daemon's API backs (POST
 * /v1/restores/{id}/apply with `through`); since every step is idempotent and journaled,
 * running applyAll again after a failure resumes where it stopped.
 */
export const APPLY_ALL_PHASES: readonly { phase: string; through: InPlaceStep; what: string }[] = [
  { phase: 'fetch', through: 'fetch', what: 'fetch and check the backup on every node' },
  { phase: 'stop-apiservers', through: 'stop-apiserver', what: 'stop the apiservers everywhere' },
  { phase: 'stop-etcd', through: 'stop-etcd', what: 'stop etcd everywhere' },
  { phase: 'restore', through: 'swap-data-dir', what: 'restore every member' },
  { phase: 'start-etcd', through: 'start-etcd', what: 'start etcd everywhere' },
  { phase: 'wait-quorum', through: 'wait-quorum', what: 'wait for a healthy quorum' },
  { phase: 'cleanup-leases', through: 'cleanup-leases', what: 'remove stale master leases (on one member)' },
  { phase: 'start-apiservers', through: 'start-apiserver', what: 'start the apiservers' },
  { phase: 'report', through: 'done', what: 'report' },
];

export interface NodeDriver {
  /** The member this node restores (its plan's `node`). */
  name: string;
  /** Its plan, as planned on that node. */
  plan: RestorePlan;
  /** Applies that node's plan up to and including `step`; resolves once it is done there. */
  applyThrough(step: InPlaceStep): Promise<void>;
}

export interface NodeOutcome {
  node: string;
  ok: boolean;
  durationMs: number;
  error?: ErrorInfo;
}

export interface PhaseOutcome {
  phase: string;
  through: InPlaceStep;
  nodes: NodeOutcome[];
}

export interface ApplyAllReport {
  ok: boolean;
  phases: PhaseOutcome[];
  /** The phase that failed, when one did: apply again to resume from it. */
  failedPhase?: string;
}

/**
 * Refuses a set of plans that cannot form one cluster: each must be an in-place plan of the
 * same backup with the same members, cluster token, bump and lease-cleaning member, and every
 * member must have exactly one node (restoring only some members is the classic failure).
 */
export function checkPlans(nodes: readonly Pick<NodeDriver, 'name' | 'plan'>[]): void {
  const first = nodes[0]?.plan;
  if (!first) throw new BadRequestError('/nodes', 'no node to restore');
  nodes.forEach(({ name, plan }, i) => {
    if (plan.mode !== 'in-place') throw new BadRequestError(`/nodes/${i}/mode`, `${name}'s plan is ${plan.mode}; apply --all restores in place`);
    if (plan.node !== name) throw new BadRequestError(`/nodes/${i}/node`, `the plan given for ${name} restores member ${plan.node}`);
    for (const field of ['backupId', 'clusterToken', 'bumpRevision', 'targetRevision', 'members', 'leaseCleanupBy', 'dryRun'] as const) {
      if (!isDeepStrictEqual(plan[field], first[field])) {
        throw new BadRequestError(`/nodes/${i}/${field}`, `${name}'s plan has ${field} ${JSON.stringify(plan[field])}, but ${nodes[0]!.name}'s has ${JSON.stringify(first[field])}: plan every member with the same backup, members, clusterToken and bumpRevision`);
      }
    }
  });
  const names = nodes.map((n) => n.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new BadRequestError('/nodes', `member ${twice} is given twice`);
  const missing = first.members.map((m) => m.name).filter((m) => !names.includes(m));
  if (missing.length > 0) {
    throw new BadRequestError('/nodes', `no node restores ${missing.join(', ')}: every member of the restored cluster must be restored, or it never gets a quorum`, {
      hint: 'plan the restore on every member (with the first plan\'s clusterToken and bumpRevision), then apply all of them',
    });
  }
}

export async function applyAll(nodes: readonly NodeDriver[], options: { onPhase?: (outcome: PhaseOutcome) => void } = {}): Promise<ApplyAllReport> {
  checkPlans(nodes);
  const report: ApplyAllReport = { ok: true, phases: [] };
  for (const { phase, through } of APPLY_ALL_PHASES) {
    const nodesOutcome = await Promise.all(
      nodes.map((node) => outcomeOf(node.name, () => node.applyThrough(through))),
    );
    const outcome: PhaseOutcome = { phase, through, nodes: nodesOutcome };
    report.phases.push(outcome);
    options.onPhase?.(outcome);
    if (nodesOutcome.some((n) => !n.ok)) {
      report.ok = false;
      report.failedPhase = phase;
      return report;
    }
  }
  return report;
}

/**
 * Rolls a restore back on every node at once (each node's rollback stops what runs on the
 * restored data before it puts the old data and manifests back), and reports per node. Rolling
 * back only some members would leave a cluster split between old and restored data.
 */
export async function rollbackAll(nodes: readonly { name: string; rollback(): Promise<void> }[]): Promise<{ ok: boolean; nodes: NodeOutcome[] }> {
  const outcomes = await Promise.all(nodes.map((node) => outcomeOf(node.name, () => node.rollback())));
  return { ok: outcomes.every((o) => o.ok), nodes: outcomes };
}

async function outcomeOf(node: string, work: () => Promise<void>): Promise<NodeOutcome> {
  const started = performance.now();
  try {
    await work();
    return { node, ok: true, durationMs: Math.round(performance.now() - started) };
  } catch (err) {
    return { node, ok: false, durationMs: Math.round(performance.now() - started), error: errorInfo(err) };
  }
}
