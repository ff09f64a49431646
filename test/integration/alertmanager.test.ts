/**
 * Alert delivery end to end: real `lifeboat serve` daemons back up into a store that fails for
 * real; a real Prometheus scrapes them and evaluates the shipped rules (a --for-scale copy, made
 * by scripts/gen-prometheusrule.ts); a real Alertmanager with the shipped route
 * (deploy/prometheus/alertmanager.yml, its webhook URLs pointed at this test and its timings
 * shortened) notifies a webhook receiver here, which records what arrives. Then the store is
 * repaired, a backup succeeds and the alert resolves at the webhook.
 *
 * Also: amtool checks the shipped alertmanager.yml, and routes every rule's alert by severity.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { generateIdentity } from '../../src/crypto/age.ts';
import { AMTOOL, startAlertmanager, type AlertmanagerRig } from '../../scripts/rig/alertmanager.ts';
import { startEtcdHost, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { freePorts } from '../../scripts/rig/ports.ts';
import { startPrometheus, type PrometheusRig } from '../../scripts/rig/prometheus.ts';
import { RULES_FILE, scaleFor } from '../../scripts/gen-prometheusrule.ts';
import { makeApiPki } from '../support/api-pki.ts';
import { sample, scrape, spawnDaemon, until, type DaemonProcess } from '../support/daemon.ts';
import { configDoc, writeConfig } from '../support/lifeboat.ts';

const run = promisify(execFile);
const ALERTMANAGER_YML = path.join(path.dirname(RULES_FILE), 'alertmanager.yml');
/** The shipped route's receivers: warnings notify, critical alerts page. */
const NOTIFY = 'lifeboat-notify';
const PAGE = 'lifeboat-page';
/** Every `for:` of the rules times this: LifeboatBackupStale's 5m becomes 3s. */
const FOR_SCALE = 0.01;
const TICK_SECONDS = 3;

interface Rule {
  alert: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}
const rules = (parse(readFileSync(RULES_FILE, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);
const rule = (name: string) => rules.find((r) => r.alert === name)!;

/** Alertmanager's webhook payload (version 4). */
interface WebhookAlert {
  status: 'firing' | 'resolved';
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  generatorURL: string;
}
interface Notification {
  receivedAt: number;
  path: string;
  body: { version: string; status: 'firing' | 'resolved'; receiver: string; groupLabels: Record<string, string>; externalURL: string; alerts: WebhookAlert[] };
}

let work: string;
let etcd: EtcdCluster | undefined;
let storeDir: string;
let webhook: Server | undefined;
const received: Notification[] = [];
let alertmanager: AlertmanagerRig | undefined;
let prometheus: PrometheusRig | undefined;
const daemons: DaemonProcess[] = [];

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-alertmanager-'));
});

after(async () => {
  await prometheus?.stop();
  await alertmanager?.stop();
  for (const d of daemons) d.child.kill('SIGKILL');
  await Promise.all(daemons.map((d) => d.exited));
  await etcd?.stop();
  if (webhook) await new Promise<void>((resolve) => webhook!.close(() => resolve()));
  if (work) await rm(work, { recursive: true, force: true });
});

/** The shipped alertmanager.yml, every webhook sent to `base`/<receiver>, every wait shortened. */
function testAlertmanagerConfig(base: string): Record<string, unknown> {
  const config = parse(readFileSync(ALERTMANAGER_YML, 'utf8')) as {
    route: RouteNode;
    receivers: { name: string; webhook_configs?: { url: string; send_resolved?: boolean }[] }[];
  };
  for (const r of config.receivers) for (const w of r.webhook_configs ?? []) w.url = `${base}/${r.name}`;
  const shorten = (node: RouteNode) => {
    if (node.group_wait !== undefined) node.group_wait = '1s';
    if (node.group_interval !== undefined) node.group_interval = '1s';
    if (node.repeat_interval !== undefined) node.repeat_interval = '1m';
    for (const child of node.routes ?? []) shorten(child);
  };
  shorten(config.route);
  return config;
}
interface RouteNode {
  receiver?: string;
  group_wait?: string;
  group_interval?: string;
  repeat_interval?: string;
  routes?: RouteNode[];
}

/** The first notification after `since` for which `pick` finds an alert. */
async function notified(what: string, pick: (n: Notification) => WebhookAlert | undefined, since: number, ms: number): Promise<{ n: Notification; alert: WebhookAlert }> {
  let found: { n: Notification; alert: WebhookAlert } | undefined;
  await until(what, () => {
    for (const n of received) {
      const alert = n.receivedAt >= since ? pick(n) : undefined;
      if (alert) {
        found = { n, alert };
        return true;
      }
    }
    return false;
  }, ms);
  return found!;
}

const iso = (ms: number) => new Date(ms).toISOString();

test('a backup that fails for real reaches a webhook through the real Prometheus and Alertmanager with the rule\'s severity, summary and runbook_url, and resolves after a good backup', async () => {
  // The webhook receiver: records every notification with the time it arrived.
  webhook = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      received.push({ receivedAt: Date.now(), path: req.url ?? '', body: JSON.parse(body) as Notification['body'] });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => webhook!.listen(0, '127.0.0.1', resolve));
  const hook = `http://127.0.0.1:${(webhook.address() as AddressInfo).port}`;

  alertmanager = await startAlertmanager({ dir: path.join(work, 'alertmanager'), config: testAlertmanagerConfig(hook) });

  // The store is a FILE where its directory should be: every write fails (ENOTDIR), for root too.
  storeDir = path.join(work, 'store');
  await writeFile(storeDir, 'not a directory\n');

  const host = await startEtcdHost(work, { members: 1, hosts: ['m1'] });
  etcd = host.etcd;
  const pki = await makeApiPki(path.join(work, 'api-pki'));
  const { recipient } = await generateIdentity();
  const names = ['cp-1', 'cp-2'];
  const metricsPorts = await freePorts(names.length);

  // Prometheus first, so that it scrapes the daemons from their first second: the rehearsal copy
  // of the rules, and the Alertmanager.
  const rulesCopy = path.join(work, 'rules-rehearsal.yaml');
  await writeFile(rulesCopy, scaleFor(readFileSync(RULES_FILE, 'utf8'), FOR_SCALE));
  prometheus = await startPrometheus({
    dir: path.join(work, 'prometheus'),
    targets: metricsPorts.map((p) => `127.0.0.1:${p}`),
    ruleFiles: [rulesCopy],
    alertmanagers: [alertmanager.target],
  });
  const stale = ((await prometheus.api('rules?type=alert')) as { groups: { rules: { name: string; duration: number }[] }[] }).groups
    .flatMap((g) => g.rules)
    .find((r) => r.name === 'LifeboatBackupStale');
  assert.equal(stale?.duration, 300 * FOR_SCALE, 'Prometheus loaded the scaled copy');

  // Two daemons, as a DaemonSet on two control-plane nodes, sharing the broken store.
  daemons.push(
    ...(await Promise.all(
      names.map(async (node, i) => {
        const doc = configDoc(etcd!, host.hostRoot, storeDir, [recipient], {
          node,
          store: { fs: { dir: storeDir } },
          retention: { afterBackup: false },
          daemon: {
            stateDir: path.join(work, `state-${node}`),
            schedules: { backup: `*/${TICK_SECONDS} * * * * *`, prune: 'off', drill: 'off' },
            election: { ttlSeconds: 2 },
            shutdownGraceSeconds: 2,
          },
          api: { listen: { host: '127.0.0.1', port: 0 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: pki.ca.cert } },
          metrics: { listen: { host: '127.0.0.1', port: metricsPorts[i] } },
          log: { level: 'info' },
        });
        return spawnDaemon(node, await writeConfig(work, doc));
      }),
    )),
  );

  // The first failed backup, and when it ended (the daemon's own timestamp).
  let failedAt = 0;
  let failedReason = '';
  await until('a backup fails', async () => {
    for (const d of daemons) {
      const m = await scrape(d.ports.metrics);
      const failure = [...m].find(([k, v]) => k.startsWith('lifeboat_backup_failures_total{') && v > 0);
      if (failure) {
        failedAt = sample(m, 'lifeboat_backup_last_attempt_timestamp_seconds')! * 1000;
        failedReason = /reason="([^"]+)"/.exec(failure[0])![1]!;
        return true;
      }
    }
    return false;
  }, 60_000);
  assert.equal(failedReason, 'STORE_FAILED');

  const backupFailed = rule('LifeboatBackupFailed');
  const firing = await notified(
    'LifeboatBackupFailed arrives at the webhook',
    (n) => (n.body.status === 'firing' ? n.body.alerts.find((a) => a.labels.alertname === 'LifeboatBackupFailed' && a.status === 'firing') : undefined),
    0,
    60_000,
  );
  const startsAt = Date.parse(firing.alert.startsAt);
  process.stdout.write(
    `# LifeboatBackupFailed: backup failed at ${iso(failedAt)}, alert active in Prometheus at ${firing.alert.startsAt} (+${((startsAt - failedAt) / 1000).toFixed(2)} s), ` +
      `webhook received it at ${iso(firing.n.receivedAt)}: ${((firing.n.receivedAt - failedAt) / 1000).toFixed(2)} s from the failed backup (scrape and evaluation every 1 s, group_wait 1 s)\n`,
  );
  assert.ok(firing.n.receivedAt >= failedAt, 'not before the failure');

  // What the on-call person gets: the one alert of the cluster (not one per pod), with the
  // rule's severity, summary and runbook link, through the shipped route's warning receiver.
  assert.equal(firing.n.body.version, '4');
  assert.equal(firing.n.body.receiver, NOTIFY);
  assert.equal(firing.n.path, `/${NOTIFY}`);
  assert.deepEqual(firing.n.body.groupLabels, { alertname: 'LifeboatBackupFailed', cluster: 'it' });
  assert.equal(firing.n.body.externalURL, alertmanager.url);
  assert.deepEqual(firing.n.body.alerts.filter((a) => a.labels.alertname === 'LifeboatBackupFailed').length, 1);
  assert.deepEqual(firing.alert.labels, { alertname: 'LifeboatBackupFailed', cluster: 'it', severity: backupFailed.labels.severity });
  assert.equal(firing.alert.labels.severity, 'warning');
  assert.equal(firing.alert.annotations.summary, backupFailed.annotations.summary!.replace('{{ $labels.cluster }}', 'it'));
  assert.equal(firing.alert.annotations.summary, 'The last backup of cluster it failed.');
  assert.equal(firing.alert.annotations.runbook_url, backupFailed.annotations.runbook_url);
  assert.equal(firing.alert.annotations.runbook_url, 'https://github.com/lifeboat-backup/lifeboat/blob/main/docs/runbook.md#lifeboatbackupfailed');
  assert.match(firing.alert.annotations.description!, /^The backup attempt that ended at .+ failed and no backup of cluster it has succeeded since\./);
  // A link to the expression in this Prometheus (named by the machine's host name).
  const generator = new URL(firing.alert.generatorURL);
  assert.deepEqual([generator.port, generator.pathname], [new URL(prometheus.url).port, '/graph'], firing.alert.generatorURL);
  // Alertmanager holds it too, as active.
  const held = (await alertmanager.alerts()).filter((a) => a.labels.alertname === 'LifeboatBackupFailed');
  assert.deepEqual(held.map((a) => [a.status.state, a.receivers.map((r) => r.name)]), [['active', [NOTIFY]]]);

  // A critical alert takes the page route: with `for: 5m` scaled to 3 s, no success within twice
  // the 3 s schedule makes LifeboatBackupStale fire.
  const paged = await notified(
    'LifeboatBackupStale pages',
    (n) => (n.body.status === 'firing' ? n.body.alerts.find((a) => a.labels.alertname === 'LifeboatBackupStale' && a.status === 'firing') : undefined),
    0,
    60_000,
  );
  assert.equal(paged.n.body.receiver, PAGE);
  assert.equal(paged.alert.labels.severity, 'critical');
  assert.equal(paged.alert.annotations.runbook_url, rule('LifeboatBackupStale').annotations.runbook_url);

  // Repair the store: the file becomes the directory. The next backup succeeds.
  await rm(storeDir);
  await mkdir(storeDir);
  let succeededAt = 0;
  await until('a backup succeeds', async () => {
    for (const d of daemons) {
      const m = await scrape(d.ports.metrics);
      if ((sample(m, 'lifeboat_backup_total{result="success"') ?? 0) > 0) {
        succeededAt = sample(m, 'lifeboat_backup_last_success_timestamp_seconds')! * 1000;
        return true;
      }
    }
    return false;
  }, 60_000);

  const resolved = await notified(
    'LifeboatBackupFailed resolves at the webhook',
    (n) => (n.body.status === 'resolved' || n.body.alerts.some((a) => a.status === 'resolved') ? n.body.alerts.find((a) => a.labels.alertname === 'LifeboatBackupFailed' && a.status === 'resolved') : undefined),
    firing.n.receivedAt,
    60_000,
  );
  process.stdout.write(
    `# LifeboatBackupFailed resolved: backup succeeded at ${iso(succeededAt)}, webhook received "resolved" at ${iso(resolved.n.receivedAt)}: ` +
      `${((resolved.n.receivedAt - succeededAt) / 1000).toFixed(2)} s later (group_interval 1 s)\n`,
  );
  assert.equal(resolved.n.body.status, 'resolved');
  assert.equal(resolved.n.body.receiver, NOTIFY);
  assert.deepEqual(resolved.alert.labels, firing.alert.labels);
  assert.equal(resolved.alert.annotations.runbook_url, backupFailed.annotations.runbook_url);
  assert.ok(Date.parse(resolved.alert.endsAt) >= succeededAt - 1000, `ends at ${resolved.alert.endsAt}, after the good backup at ${iso(succeededAt)}`);
  assert.equal(Date.parse(resolved.alert.startsAt), startsAt, 'the same alert');

  // The stale alert clears with the same good backup.
  await notified(
    'LifeboatBackupStale resolves',
    (n) => n.body.alerts.find((a) => a.labels.alertname === 'LifeboatBackupStale' && a.status === 'resolved'),
    paged.n.receivedAt,
    60_000,
  );
  const kinds = [...new Set(received.map((n) => `${n.body.receiver}:${n.body.alerts.map((a) => `${a.labels.alertname}/${a.status}`).join(',')}`))];
  process.stdout.write(`# notifications received: ${received.length} (${kinds.join('; ')})\n`);
});

test('gen-prometheusrule --for-scale: a copy of the rules with only every `for:` scaled, which promtool accepts', async () => {
  const source = readFileSync(RULES_FILE, 'utf8');
  const out = path.join(work, 'scaled.yaml');
  await run(process.execPath, [path.join(path.dirname(RULES_FILE), '../../scripts/gen-prometheusrule.ts'), '--for-scale', '0.01', '--out', out]);
  const copy = readFileSync(out, 'utf8');
  assert.equal(copy, scaleFor(source, 0.01));
  // Line for line the same but for a header and the `for:` values: 5m → 3s, 2m → 1200ms, 10m → 6s.
  const fors = rules.map((r) => (r as Rule & { for?: string }).for).filter((f) => f !== undefined);
  const header = copy.split('\n').slice(0, 3);
  assert.match(header.join('\n'), new RegExp(`^# A rehearsal copy of lifeboat-rules.yaml with every \`for:\` scaled by 0.01 \\(${fors.length} rules\\)[^]*Do not deploy it`));
  const body = copy.split('\n').slice(3);
  const lines = source.split('\n');
  assert.equal(body.length, lines.length);
  const changed = lines.flatMap((l, i) => (l === body[i] ? [] : [`${l.trim()} → ${body[i]!.trim()}`]));
  assert.equal(changed.length, fors.length);
  assert.deepEqual([...new Set(changed)].sort(), ['for: 10m → for: 6s', 'for: 2m → for: 1200ms', 'for: 5m → for: 3s']);
  const checked = await run('promtool', ['check', 'rules', out]);
  assert.match(checked.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
  assert.throws(() => scaleFor(source, 0), /positive factor/);
  assert.equal(scaleFor(source, 1).split('\n').slice(3).join('\n'), source, 'a factor of 1 changes nothing');
});

test('amtool check-config accepts the shipped alertmanager.yml, and it routes every Lifeboat alert by severity', async () => {
  const checked = await run(AMTOOL, ['check-config', ALERTMANAGER_YML]);
  assert.match(checked.stdout, /SUCCESS/);
  assert.match(checked.stdout, /3 receivers/);

  const route = async (labels: Record<string, string>) =>
    (await run(AMTOOL, ['config', 'routes', 'test', `--config.file=${ALERTMANAGER_YML}`, ...Object.entries(labels).map(([k, v]) => `${k}=${v}`)])).stdout.trim();
  for (const r of rules) {
    const expected = r.labels.severity === 'critical' ? PAGE : NOTIFY;
    assert.equal(await route({ alertname: r.alert, cluster: 'prod', ...r.labels }), expected, r.alert);
  }
  assert.equal(await route({ alertname: 'KubeAPIDown', severity: 'critical' }), 'default', 'other alerts keep their route');

  // A broken file is refused: the check would catch a bad edit.
  const broken = path.join(work, 'broken-alertmanager.yml');
  await writeFile(broken, readFileSync(ALERTMANAGER_YML, 'utf8').replace('receiver: lifeboat-page', 'receiver: lifeboat-pager'));
  await assert.rejects(run(AMTOOL, ['check-config', broken]), (err: { stdout?: string; stderr?: string }) => /undefined receiver "lifeboat-pager"/.test(`${err.stdout ?? ''}${err.stderr ?? ''}`));
});
