import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { LifeboatMetrics } from '../../src/metrics/metrics.ts';
import { startPrometheus, type PromSample } from '../../scripts/rig/prometheus.ts';
import { RULES_FILE as RULES } from '../../scripts/gen-prometheusrule.ts';
import { REPO } from '../support/lifeboat.ts';

const PROM_DIR = path.dirname(RULES);
const TESTS = readdirSync(path.join(PROM_DIR, 'tests')).filter((f) => f.endsWith('.yaml')).sort();

interface Rule {
  alert: string;
  expr: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
const rules = (parse(readFileSync(RULES, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-alerts-'));
after(() => rm(work, { recursive: true, force: true }));

function run(cmd: string, args: string[], options: { cwd?: string; input?: string } = {}): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: options.cwd ?? REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, out }));
    child.stdin.end(options.input ?? '');
  });
}

/** A facade with every verb exercised, as a daemon's would be after a while. */
function busyMetrics(cluster: string): LifeboatMetrics {
  const m = new LifeboatMetrics({ cluster, node: 'cp-1', version: '0.1.0' });
  m.setLeader(true);
  m.setExpectedInterval(3600);
  m.setExpectedInterval(86400, 'drill');
  m.setEtcdDbSize(52_428_800);
  m.seedFromCatalogue({ lastBackupAt: new Date(Date.now() - 600_000), lastBackupSizeBytes: 1000, lastVerifiedAt: { deep: new Date(Date.now() - 900_000) } });
  const ago = (s: number) => new Date(Date.now() - s * 1000);
  m.backupStarted(ago(300));
  m.backupFinished({ result: 'success', durationSeconds: 12.5, sizeBytes: 4_194_304, now: ago(288) });
  m.backupStarted(ago(62));
  m.backupFinished({ result: 'failure', durationSeconds: 2, reason: 'STORE_FAILED', now: ago(60) });
  m.verifyFinished({ result: 'success', level: 'ciphertext', now: ago(280) });
  m.verifyFinished({ result: 'failure', level: 'drill', now: ago(200) });
  m.storeOperation('primary', 'put', 'success');
  m.storeOperation('primary', 'get', 'not_found');
  m.storeOperation('secondary', 'put', 'failure');
  m.storeOperation('primary', 'put', 'aborted');
  m.orphansCleaned(2);
  m.retentionDeleted(3);
  m.changes.setLagSource(() => 4.5);
  m.changes.captured('1043', ago(5));
  m.changes.committed(2048);
  m.changes.gap();
  return m;
}

test('promtool check rules: the rules file is valid', async () => {
  const { code, out } = await run('promtool', ['check', 'rules', RULES]);
  assert.equal(code, 0, out);
  assert.match(out, new RegExp(`SUCCESS: ${rules.length} rules found`));
  assert.equal(rules.length, 12);
});

test('promtool test rules: every case passes', async () => {
  const { code, out } = await run('promtool', ['test', 'rules', ...TESTS], { cwd: path.join(PROM_DIR, 'tests') });
  assert.equal(code, 0, out);
  assert.equal(out.match(/SUCCESS/g)?.length, TESTS.length, out);
  assert.doesNotMatch(out, /FAILED/);
});

test('the rule tests cover every alert both firing and not firing, and LifeboatBackupFailed on a failing and a healthy store', () => {
  const firing = new Map<string, number>();
  const silent = new Map<string, number>();
  const caseNames: string[] = [];
  for (const file of TESTS) {
    const doc = parse(readFileSync(path.join(PROM_DIR, 'tests', file), 'utf8')) as {
      rule_files: string[];
      tests: { name: string; alert_rule_test?: { alertname: string; exp_alerts?: { exp_labels?: Record<string, string>; exp_annotations?: Record<string, string> }[] }[] }[];
    };
    assert.deepEqual(doc.rule_files, ['../lifeboat-rules.yaml'], file);
    for (const t of doc.tests) {
      caseNames.push(t.name);
      for (const a of t.alert_rule_test ?? []) {
        const exp = a.exp_alerts ?? [];
        const tally = exp.length > 0 ? firing : silent;
        tally.set(a.alertname, (tally.get(a.alertname) ?? 0) + 1);
        const rule = rules.find((r) => r.alert === a.alertname);
        assert.ok(rule, `${file}: ${a.alertname} is not a rule`);
        for (const e of exp) {
          // A firing case checks the severity and every annotation, runbook link included.
          assert.equal(e.exp_labels?.severity, rule.labels.severity, `${file}/${t.name}: ${a.alertname} severity`);
          assert.deepEqual(Object.keys(e.exp_annotations ?? {}).sort(), ['description', 'runbook_url', 'summary'], `${file}/${t.name}`);
        }
      }
    }
  }
  for (const rule of rules) {
    assert.ok((firing.get(rule.alert) ?? 0) >= 1, `no case where ${rule.alert} fires`);
    assert.ok((silent.get(rule.alert) ?? 0) >= 1, `no case where ${rule.alert} must stay silent`);
  }
  assert.ok(caseNames.includes('failing store') && caseNames.includes('healthy store'), 'the acceptance cases are there');
});

test('every alert has a severity, a summary, a description and a runbook_url that exists in docs/runbook.md', () => {
  const anchors = githubAnchors(readFileSync(path.join(REPO, 'docs/runbook.md'), 'utf8'));
  for (const rule of rules) {
    assert.match(rule.alert, /^Lifeboat[A-Z][A-Za-z]+$/);
    assert.ok(['critical', 'warning'].includes(rule.labels.severity ?? ''), `${rule.alert}: severity`);
    assert.ok(rule.annotations.summary && rule.annotations.description, `${rule.alert}: summary and description`);
    const url = rule.annotations.runbook_url ?? '';
    assert.equal(url, `https://github.com/lifeboat-backup/lifeboat/blob/main/docs/runbook.md#${rule.alert.toLowerCase()}`);
    assert.ok(anchors.has(rule.alert.toLowerCase()), `docs/runbook.md has no heading for #${rule.alert.toLowerCase()}`);
  }
  // The anchor check itself: a heading that is not there is not found.
  assert.ok(!anchors.has('lifeboatnosuchalert'));
  assert.ok(anchors.has('alerts'));
});

test('githubAnchors follows GitHub: lower case, punctuation dropped, spaces to dashes, repeats numbered, code ignored', () => {
  const anchors = githubAnchors('# A Title\n## Restore: step 2 (etcd)\n```\n# not a heading\n```\n### A Title\n');
  assert.deepEqual([...anchors], ['a-title', 'restore-step-2-etcd', 'a-title-1']);
});

test('promtool check metrics accepts the facade\'s real output', async () => {
  const text = await busyMetrics('prod').render();
  assert.match(text, /^lifeboat_backup_failures_total\{reason="STORE_FAILED",cluster="prod"\} 1$/m);
  const { code, out } = await run('promtool', ['check', 'metrics'], { input: text });
  assert.equal(code, 0, out);
  assert.equal(out.trim(), '', 'promtool reports no lint problem');
});

test('promtool check metrics would reject what the facade drops', async () => {
  const { code, out } = await run('promtool', ['check', 'metrics'], {
    input: '# HELP nodejs_active_handles_total Total number of active handles.\n# TYPE nodejs_active_handles_total gauge\nnodejs_active_handles_total 3\n',
  });
  assert.notEqual(code, 0);
  assert.match(out, /non-counter metrics should not have "_total" suffix/);
});

test('a real Prometheus scrapes the facade, evaluates every rule and dashboard query, and fires and clears alerts', async () => {
  const metrics = busyMetrics('it');
  const server = createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    metrics.render().then(
      (body) => res.writeHead(200, { 'content-type': metrics.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const prometheus = await startPrometheus({ dir: path.join(work, 'prometheus'), targets: [`127.0.0.1:${port}`], ruleFiles: [RULES] });
  try {
    const seen = await prometheus.waitFor('lifeboat_backup_total', (s) => s.length === 2);
    for (const s of seen) assert.deepEqual({ cluster: s.metric.cluster, job: s.metric.job }, { cluster: 'it', job: 'lifeboat' });
    assert.deepEqual(seen.map((s) => [s.metric.result, s.value]).sort(), [['failure', 1], ['success', 1]]);

    // The join the staleness rules rely on works on real scrape labels.
    const oldest = await prometheus.query('min by (cluster) (process_start_time_seconds and on (cluster, job, instance) lifeboat_build_info)');
    assert.equal(oldest.length, 1);
    assert.ok(Math.abs(oldest[0]!.value - (Date.now() / 1000 - process.uptime())) < 5);

    // The last backup attempt and the last drill failed: those two alerts fire (they have no
    // `for`), and nothing else is even pending.
    const alerts = async () => {
      const data = (await prometheus.api('alerts')) as { alerts: { labels: Record<string, string>; state: string }[] };
      return data.alerts.map((a) => `${a.labels.alertname} ${a.state} ${a.labels.cluster}${a.labels.level ? ` ${a.labels.level}` : ''}`).sort();
    };
    // (A group evaluated before the first scrape saw no target: give each an evaluation after it.)
    const expected = ['LifeboatBackupFailed firing it', 'LifeboatVerifyFailing firing it drill'];
    let active = await alerts();
    for (const until = Date.now() + 30_000; JSON.stringify(active) !== JSON.stringify(expected) && Date.now() < until; active = await alerts()) {
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.deepEqual(active, expected);

    // Every rule evaluates without error against real data.
    const health = await rulesHealth(prometheus.api);
    assert.equal(health.length, rules.length);
    for (const r of health) assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`);

    // A store failure after the first scrape is an increase from the pre-initialised 0.
    metrics.storeOperation('primary', 'delete', 'failure');
    const storeAlert = await prometheus.waitFor('ALERTS{alertname="LifeboatStoreErrors",alertstate="firing"}', (s) => s.length === 1);
    assert.equal(storeAlert[0]!.metric.store, 'primary');

    // A successful backup and drill clear their alerts.
    metrics.backupFinished({ result: 'success', durationSeconds: 10, sizeBytes: 5_000_000 });
    metrics.verifyFinished({ result: 'success', level: 'drill' });
    await prometheus.waitFor('ALERTS{alertname=~"LifeboatBackupFailed|LifeboatVerifyFailing"}', (s) => s.length === 0);
    const size = await prometheus.query('lifeboat_backup_size_bytes');
    assert.deepEqual(size.map((s) => [s.metric.cluster, s.value]), [['it', 5_000_000]]);

    // The dashboard's cluster variable lists this cluster, and every panel query runs on real
    // data without an error (vector matching errors show only at run time).
    assert.deepEqual(await prometheus.api(`label/cluster/values?match[]=lifeboat_build_info`), ['it']);
    const dashboard = JSON.parse(readFileSync(path.join(REPO, 'deploy/grafana/lifeboat.json'), 'utf8')) as { panels: { title: string; targets?: { expr: string }[] }[] };
    const results = new Map<string, PromSample[]>();
    for (const panel of dashboard.panels) {
      for (const [i, target] of (panel.targets ?? []).entries()) {
        const expr = target.expr.replaceAll('$cluster', 'it').replaceAll('$__rate_interval', '1m').replaceAll('$__interval', '1m');
        results.set(`${panel.title}/${i}`, await prometheus.query(expr));
      }
    }
    assert.equal(results.get('Since the last successful backup/0')?.length, 1);
    assert.deepEqual(results.get('Leader/0')?.map((s) => s.metric.node), ['cp-1']);
    assert.deepEqual(results.get('Leader/1'), [], 'the leader count shows only when it is not 1');
    assert.deepEqual(results.get('Backup size/0')?.map((s) => s.value), [5_000_000]);
    assert.equal(results.get('Lifeboat instances/1')?.[0]?.metric.version, '0.1.0');

    // A backup committed without its ClusterConfiguration fires LifeboatBackupKitIncomplete for
    // that role; the next complete backup clears it.
    metrics.backupFinished({ result: 'success', durationSeconds: 10, sizeBytes: 5_000_000, kitMissing: ['cluster-configuration'] });
    const kitAlert = await prometheus.waitFor('ALERTS{alertname="LifeboatBackupKitIncomplete",alertstate="firing"}', (s) => s.length === 1);
    assert.deepEqual([kitAlert[0]!.metric.cluster, kitAlert[0]!.metric.role], ['it', 'cluster-configuration']);
    metrics.backupFinished({ result: 'success', durationSeconds: 10, sizeBytes: 5_000_000 });
    await prometheus.waitFor('ALERTS{alertname="LifeboatBackupKitIncomplete"}', (s) => s.length === 0);
  } finally {
    await prometheus.stop();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

/** Each alerting rule's health, once every group has been evaluated at least once. */
async function rulesHealth(api: (p: string) => Promise<unknown>): Promise<{ name: string; health: string; lastError?: string }[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const data = (await api('rules?type=alert')) as { groups: { rules: { name: string; health: string; lastError?: string }[] }[] };
    const all = data.groups.flatMap((g) => g.rules);
    if ((all.length > 0 && all.every((r) => r.health !== 'unknown')) || Date.now() > deadline) return all;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The anchors GitHub makes for a Markdown file's headings. */
function githubAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (/^\s*(```|~~~)/.test(line)) fenced = !fenced;
    const m = fenced ? null : /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line);
    if (!m) continue;
    const base = m[1]!
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = counts.get(base) ?? 0;
    counts.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}
