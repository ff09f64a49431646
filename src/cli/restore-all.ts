import type { Command } from 'commander';
import { followJob, jobError, type ApiClient } from '../api/client.ts';
import { describeError, LifeboatError, type ErrorCode } from '../errors/errors.ts';
import { findStarted, memberUrl, planMembers, planOn, resolveBackupId, rollbackTargets, type FleetNode, type StartedRestore } from '../restore/fleet.ts';
import { APPLY_ALL_PHASES, applyAll, checkPlans, rollbackAll, type ApplyAllReport, type NodeDriver } from '../restore/orchestrate.ts';
import { pointOf, STEP_NAMES, type InPlaceStep, type MemberRef, type StepName } from '../restore/plan.ts';
import { backupRef, client, members, pairs, usage, type ApplyOptions, type RollbackOptions } from './restore-args.ts';
import { formatBytes, type Output } from './output.ts';
import { quote } from './restore-print.ts';

/**
 * `lifeboat restore apply --all` and `rollback --all`: every member's daemon, driven in the safe
 * order (src/restore/orchestrate.ts), each node step by step through POST .../apply with `through`.
 */

type Node = FleetNode<ApiClient>;

/** Where each member's daemon answers: --daemon, else the host of its peer URL at client.url's port. */
function daemonUrls(cmd: Command, base: ApiClient, given: readonly string[]): { first: string; forMember(m: MemberRef): string; check(members: MemberRef[]): void } {
  const map = new Map(pairs(cmd, '--daemon', given));
  for (const url of map.values()) if (!/^https:\/\/[^\s/]+\/?$/.test(url)) usage(cmd, `--daemon ${url}: expected https://host:port`);
  return {
    first: map.values().next().value ?? base.url,
    forMember: memberUrl(map, new URL(base.url).port || '443'),
    check: (members) => {
      for (const name of map.keys()) {
        if (!members.some((m) => m.name === name)) usage(cmd, `--daemon ${name}: ${name} is not a member (${members.map((m) => m.name).join(', ')})`);
      }
    },
  };
}

/** What both --all commands start from: how to talk to each member's daemon, and which backup. */
async function allMembers(cmd: Command, out: Output, options: ApplyOptions | RollbackOptions) {
  const ref = backupRef(cmd, options);
  const say = (line: string) => out.line(line);
  const base = client(cmd);
  const urls = daemonUrls(cmd, base, options.daemon);
  const firstApi = base.withUrl(urls.first);
  // A point in time: the backup it starts from is known once the first member planned it.
  const point = pointOf(ref);
  const started: StartedRestore = point ? { point } : { backupId: await resolveBackupId(firstApi, ref) };
  return { say, urls, firstApi, ref, started, backupId: 'backupId' in started ? started.backupId : undefined };
}

export async function applyAllCommand(cmd: Command, out: Output, options: ApplyOptions): Promise<void> {
  const started = performance.now();
  const { say, urls, firstApi, ref, started: of, backupId } = await allMembers(cmd, out, options);

  let first: Node;
  // The restore of the backup itself, or to the same point, that an earlier run started.
  const found = options.again ? undefined : await findStarted(firstApi, 'point' in of ? of : { ...of, pointInTime: false });
  if (found) {
    first = { name: found.plan.node, api: firstApi, plan: found.plan };
    say(`${first.name}: resuming ${found.plan.id} (${found.state}) on ${firstApi.url}`);
  } else {
    const m = members(cmd, options.member);
    first = await planOn(firstApi, undefined, { backup: backupId ?? ref, mode: 'in-place', ...(m ? { members: m } : {}) }, say);
  }
  urls.check(first.plan.members);
  const nodes = await planMembers(first, urls.forMember, say);
  checkPlans(nodes);
  const views = await Promise.all(nodes.map((n) => n.api.restore(n.plan.id)));
  if (views.every((v) => v.state === 'done')) {
    say(`restore of ${first.plan.backupId} is already done on every member (${nodes.map((n) => n.plan.id).join(', ')}); --again restores it once more`);
    await report(out, nodes, { ok: true, phases: [] }, performance.now() - started, undefined);
    return;
  }
  const p = first.plan;
  say('');
  say(`restoring ${p.backupId} (revision ${p.backup.revision}, ${formatBytes(p.backup.dbSize)}) in place on ${nodes.map((n) => n.name).join(', ')}`);
  say(`new cluster token ${p.clusterToken}; revision bump ${p.bumpRevision}: every member starts at revision >= ${p.targetRevision}; expected downtime about ${p.expectedDowntimeSeconds} s`);
  for (const [i, n] of nodes.entries()) {
    say(`  ${n.name}: ${[n.plan.self.etcdutl.command, ...n.plan.self.etcdutl.args].map(quote).join(' ')}`);
    say(`  ${' '.repeat(n.name.length)}  old data set aside at ${n.plan.setAside.map((s) => s.to).join(', ')}${views[i]!.state === 'planned' ? '' : ` (resuming: ${views[i]!.state})`}`);
  }

  // Each phase starts on every node once all finished the one before (orchestrate.ts).
  const announced = new Set<string>();
  let quorumAt: number | undefined;
  const announce = (through: InPlaceStep) => {
    if (announced.has(through)) return;
    announced.add(through);
    const index = APPLY_ALL_PHASES.findIndex((ph) => ph.through === through);
    const phase = APPLY_ALL_PHASES[index]!;
    say(`[${index + 1}/${APPLY_ALL_PHASES.length}] ${phase.phase}: ${phase.what}   (+${seconds(performance.now() - started)} s)`);
  };
  const drivers: NodeDriver[] = nodes.map((n) => ({
    name: n.name,
    plan: n.plan,
    applyThrough: async (through) => {
      announce(through);
      const view = await n.api.restore(n.plan.id);
      if (view.state === 'done' || view.journal.steps[through]?.state === 'done') return;
      const { job } = await n.api.applyRestore(n.plan.id, { confirmationToken: n.plan.confirmationToken, through });
      const done = await followJob(n.api, job, options.pollInterval, (j) => {
        if (j.state === 'running' && STEP_NAMES.includes(j.phase as StepName)) say(`      ${n.name}  ${j.phase}`);
      });
      if (done.state === 'failed') throw jobError(done);
    },
  }));
  const result = await applyAll(drivers, {
    onPhase: (outcome) => {
      if (outcome.through === 'wait-quorum' && outcome.nodes.every((o) => o.ok)) quorumAt = performance.now() - started;
      for (const o of outcome.nodes) say(`      ${o.node}  ${o.ok ? 'ok' : 'FAILED'} (${seconds(o.durationMs)} s)${o.error ? `: ${o.error.code}: ${o.error.message}${o.error.hint ? ` (${o.error.hint})` : ''}` : ''}`);
    },
  });
  await report(out, nodes, result, performance.now() - started, quorumAt);
  if (!result.ok) {
    const failed = result.phases.at(-1)?.nodes.filter((o) => !o.ok) ?? [];
    const what = failed.map((o) => `${o.node}: ${o.error?.message ?? 'failed'}`).join('; ');
    const nothingLive = result.failedPhase === 'fetch' ? ' Nothing live was touched.' : '';
    throw new LifeboatError((failed[0]?.error?.code ?? 'INTERNAL') as ErrorCode, `restore apply --all stopped in phase ${result.failedPhase}: ${what}.${nothingLive}`, {
      hint: `fix that, then run the same command again to resume (every step is idempotent and journaled), or roll every member back: lifeboat restore rollback --all --backup ${p.backupId}${options.daemon.map((d) => ` --daemon ${d}`).join('')}`,
    });
  }
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

async function report(out: Output, nodes: Node[], result: ApplyAllReport, elapsedMs: number, quorumMs: number | undefined): Promise<void> {
  const views = await Promise.all(nodes.map((n) => n.api.restore(n.plan.id).catch((err: unknown) => err as Error)));
  const rows = nodes.map((n, i) => {
    const v = views[i]!;
    if (v instanceof Error) return { node: n.name, restoreId: n.plan.id, state: 'unknown', error: describeError(v) };
    const { quorum } = v.journal.result;
    return { node: n.name, restoreId: n.plan.id, state: v.state, setAside: v.plan.setAside.map((s) => s.to), revision: quorum?.revision, leader: quorum?.leader };
  });
  const data = { ok: result.ok, ...(result.failedPhase ? { failedPhase: result.failedPhase } : {}), elapsedSeconds: elapsedMs / 1000, ...(quorumMs === undefined ? {} : { healthyQuorumAfterSeconds: quorumMs / 1000 }), phases: result.phases, nodes: rows };
  out.data(data, () => {
    out.line('');
    out.line(result.ok ? `restore done on every member in ${seconds(elapsedMs)} s${quorumMs === undefined ? '' : ` (a healthy quorum after ${seconds(quorumMs)} s)`}` : `restore stopped in phase ${result.failedPhase} after ${seconds(elapsedMs)} s`);
    out.table(['NODE', 'RESTORE', 'STATE', 'REVISION', 'OLD DATA SET ASIDE AT'], rows.map((r) => [r.node, r.restoreId, r.state, r.revision ?? '', 'setAside' in r ? (r.setAside ?? []).join(', ') : (r.error ?? '')]));
  });
}

export async function rollbackAllCommand(cmd: Command, out: Output, options: RollbackOptions): Promise<void> {
  const { say, urls, firstApi, started } = await allMembers(cmd, out, options);
  const nodes = await rollbackTargets(firstApi, started, urls.forMember, say, urls.check);
  say(`rolling back ${nodes.map((n) => `${n.name} (${n.plan.id})`).join(', ')}`);
  const result = await rollbackAll(nodes.map((n) => ({
    name: n.name,
    rollback: async () => {
      const view = await n.api.restore(n.plan.id);
      if (view.journal.rollback?.state === 'done') return;
      const { job } = await n.api.rollbackRestore(n.plan.id, { confirmationToken: n.plan.confirmationToken });
      const done = await followJob(n.api, job, options.pollInterval, () => undefined);
      if (done.state === 'failed') throw jobError(done);
    },
  })));
  const views = await Promise.all(nodes.map((n) => n.api.restore(n.plan.id).catch(() => undefined)));
  out.data({ ...result, restores: views }, () => {
    for (const [i, o] of result.nodes.entries()) {
      say(`${o.node}: ${o.ok ? 'rolled back' : `FAILED: ${o.error?.message ?? ''}`}`);
      for (const a of views[i]?.journal.rollback?.actions ?? []) say(`  - ${a}`);
    }
  });
  if (!result.ok) throw new LifeboatError('INTERNAL', `the rollback failed on ${result.nodes.filter((o) => !o.ok).map((o) => o.node).join(', ')}`, { hint: 'fix what it says, then run the same command again' });
}
