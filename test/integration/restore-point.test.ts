/**
 * Point-in-time restore on the real lab (three kubeadm hosts, Kubernetes and etcd 3.6 built from
 * source): `lifeboat serve` on each host with the change log on, one full backup, then a
 * namespace made after it (only the change log holds it), the moment noted, the namespace
 * deleted with kubectl and a ConfigMap made elsewhere. `lifeboat restore apply --all --to-time`
 * restores every member in place to that moment: each member replays the change log onto the
 * backup when it fetches it, the same events in the same transactions.
 *
 * Checked: the namespace and its objects are back with their contents, the later ConfigMap is
 * gone, the three members hold the same keys and values (etcdctl endpoint hashkv), and every
 * member's journal records the same replay.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { readTrustedSegment, segmentIds } from '../../src/changes/manifest.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { startKubeCluster, waitForNodes, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster } from '../../scripts/lab/fill.ts';
import type { LabHost } from '../../scripts/lab/hosts.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import { until, type DaemonProcess } from '../support/daemon.ts';
import { daemonOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { runCli } from '../support/lifeboat.ts';
import { apiOf, backupThroughApi, etcdctlOn, kubectlOn, memberStatus, restoresOn } from '../support/restore-nodes.ts';
import { TEST_TRUST } from '../support/signing.ts';

const NET = 28;
const NAMES = ['cp-1', 'cp-2', 'cp-3'];
const NS = 'orders';
let work: string;
let cluster: KubeCluster;
let hosts: LabHost[];
let lb: LabLifeboat;
let pki: ApiPki;
const daemons: DaemonProcess[] = [];
const tokens = { viewer: generateToken(), operator: generateToken(), restorer: generateToken() };
const key = await generateIdentity();
/** The moment restored to, and what namespace NS held then. */
let moment: string;
let atMoment: string;
let backupRevision: bigint;

const api = () => apiOf(pki, tokens);
const daemonUrl = (i: number) => `https://${hosts[i]!.address}:8443`;
const cliEnv = () => ({ LIFEBOAT_CLIENT__URL: daemonUrl(0), LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__TOKEN: tokens.restorer });

/** The ConfigMaps and Secrets of NS, names and data, as kubectl reads them. */
async function namespaceContents(host: LabHost): Promise<string> {
  const res = await kubectlOn(host, ['get', 'configmaps,secrets', '-n', NS, '-o', 'json']);
  if (res.code !== 0) return `absent: ${res.stderr.trim()}`;
  const items = (JSON.parse(res.stdout) as { items: { kind: string; metadata: { name: string }; data?: Record<string, string> }[] }).items;
  return JSON.stringify(items.filter((i) => i.metadata.name !== 'kube-root-ca.crt').map((i) => [i.kind, i.metadata.name, i.data]).sort());
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-restore-point-'));
  cluster = await startKubeCluster({ net: NET, dir: work, names: NAMES });
  hosts = cluster.hosts;
  await fillCluster(cluster, { namespaces: 2, targetMiB: 5 });
  pki = await makeApiPki(path.join(work, 'api-pki'), hosts.map((h) => `IP:${h.address}`));
  await writeSecret(path.join(work, 'tokens'), `${tokenLine(tokens.viewer, 'viewer', 'grafana')}\n${tokenLine(tokens.operator, 'operator', 'oncall')}\n${tokenLine(tokens.restorer, 'restorer', 'dr-team')}\n`);
  const identityFile = await writeSecret(path.join(work, 'identity.txt'), identityFileText(key.identity, key.recipient, new Date()));
  lb = { work, storeDir: path.join(work, 'store'), recipient: key.recipient, identityFile };
  for (const host of hosts) {
    daemons.push(await daemonOn(host, lb, {
      daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' }, election: { ttlSeconds: 5 }, shutdownGraceSeconds: 2 },
      api: { listen: { host: host.address, port: 8443 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile: path.join(work, 'tokens') },
      metrics: { listen: { host: '127.0.0.1', port: 9464 } },
      changes: { enabled: true, segmentSeconds: 1 },
    }));
  }
  const job = await backupThroughApi(api(), hosts.map((_, i) => daemonUrl(i)));
  assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
  backupRevision = BigInt((job.result as { revision: string }).revision);

  // After the backup: only the change log holds this namespace.
  await cluster.kubectl(['create', 'namespace', NS]);
  for (let i = 0; i < 5; i++) await cluster.kubectl(['create', 'configmap', `order-${i}`, '-n', NS, `--from-literal=total=${100 + i}`]);
  await cluster.kubectl(['create', 'secret', 'generic', 'payment', '-n', NS, '--from-literal=card=4111-1111']);
  atMoment = await namespaceContents(hosts[0]!);
  await sleep(1500);
  moment = new Date().toISOString();
  await sleep(1500);
  await cluster.kubectl(['delete', 'namespace', NS, '--wait=false']);
  await until(`namespace ${NS} is gone`, async () => /NotFound/.test((await kubectlOn(hosts[0]!, ['get', 'namespace', NS])).stderr), 180_000);
  await cluster.kubectl(['create', 'configmap', 'made-after-the-moment', '-n', 'default', '--from-literal=x=1']);
  const live = (await memberStatus(hosts[0]!)).revision;
  const store = new FsStore(lb.storeDir);
  await until('the change log holds every revision', async () => {
    const ids = await segmentIds(store, 'lab');
    return ids.length > 0 && BigInt((await readTrustedSegment(store, 'lab', TEST_TRUST, ids.at(-1)!)).manifest.lastRevision) >= live;
  }, 60_000);
});

after(async () => {
  for (const d of daemons) d.child.kill('SIGKILL');
  await Promise.all(daemons.map((d) => d.exited));
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('restore apply --all --to-time: every member replays the change log onto the backup; the deleted namespace is back as it was, what came after is gone, the members agree', async () => {
  assert.match(atMoment, /order-4/);
  const started = performance.now();
  const res = await runCli(['restore', 'apply', '--all', '--to-time', moment, '--mode', 'in-place', ...NAMES.flatMap((n, i) => ['--daemon', `${n}=${daemonUrl(i)}`])], cliEnv());
  assert.equal(res.code, 0, res.stdout + res.stderr);
  assert.match(res.stdout, /restore done on every member/);
  console.log(`# point-in-time restore: ${((performance.now() - started) / 1000).toFixed(1)} s (${/restore done on every member.*/.exec(res.stdout)?.[0] ?? ''})`);
  await waitForNodes(cluster, NAMES, 180_000);

  for (const h of hosts) assert.equal(await namespaceContents(h), atMoment, `${h.name}: namespace ${NS} as it was at ${moment}`);
  assert.equal((await kubectlOn(hosts[1]!, ['get', 'namespace', NS, '-o', 'jsonpath={.status.phase}'])).stdout, 'Active');
  assert.match((await kubectlOn(hosts[2]!, ['get', 'configmap', 'made-after-the-moment', '-n', 'default'])).stderr, /NotFound/, 'what came after the moment is gone');

  // One plan per member, each fetched the same backup and replayed the same events.
  const views = await Promise.all(hosts.map(async (_, i) => (await restoresOn(api(), daemonUrl(i))).at(-1)!));
  const replays = views.map((v) => v.journal.facts.replayed);
  assert.ok(replays[0] && replays[0].events > 0, JSON.stringify(replays[0]));
  assert.ok(BigInt(views[0]!.plan.backup.revision) === backupRevision);
  for (const r of replays) assert.deepEqual({ ...r, seconds: 0 }, { ...replays[0]!, seconds: 0 }, 'the same replay on every member');
  assert.equal(new Set(views.map((v) => v.plan.pointInTime!.targetRevision)).size, 1);
  // The members hold the same keys and values at the same revision.
  const rev = (await memberStatus(hosts[0]!)).revision;
  await until('every member reaches that revision', async () => (await Promise.all(hosts.map(memberStatus))).every((s) => s.revision >= rev), 60_000);
  const hashes = JSON.parse((await etcdctlOn(hosts[0]!, ['endpoint', 'hashkv', '--cluster', `--rev=${rev}`, '-w', 'json'])).stdout) as { HashKV: { hash: number } }[];
  assert.equal(hashes.length, 3);
  assert.equal(new Set(hashes.map((h) => h.HashKV.hash)).size, 1, `one hash of the keyspace on every member: ${JSON.stringify(hashes)}`);

  // The same command again finds the restore to that point on every member: nothing is planned anew.
  const again = await runCli(['restore', 'apply', '--all', '--to-time', moment, '--mode', 'in-place', ...NAMES.flatMap((n, i) => ['--daemon', `${n}=${daemonUrl(i)}`])], cliEnv());
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.match(again.stdout, new RegExp(`resuming ${views[0]!.plan.id} \\(done\\)`));
  assert.match(again.stdout, /is already done on every member/);
  for (const [i, v] of views.entries()) assert.equal((await restoresOn(api(), daemonUrl(i))).at(-1)!.plan.id, v.plan.id, `no new plan on ${NAMES[i]}`);
});
