/**
 * Disaster: a namespace deleted by mistake, on the real lab (three kubeadm control-plane hosts,
 * Kubernetes and etcd 3.6 built from source, scripts/lab/), undone by following the runbook's
 * section "A namespace deleted by mistake" to the letter: its shell block is read from
 * docs/runbook.md and run line by line (`lifeboat` on cp-1 as root, curl and kubectl as an
 * operator would), so the runbook cannot drift from what is tested.
 *
 * Namespace `shop` holds a Deployment (with the ReplicaSet and Pods the real
 * kube-controller-manager makes for it), a Secret, a ConfigMap and a custom resource of a CRD made
 * for it. Backups are taken before it exists, while it exists, and after its deletion; a watch
 * through kubectl and one through etcdctl stay open from before the deletion to the restore; a
 * ConfigMap elsewhere is made after the deletion.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import { generateIdentity, identityFileText } from '../../src/crypto/age.ts';
import { etcdBinaries, kubernetesBinaries } from '../../scripts/rig/binaries.ts';
import { killOnExit } from '../../scripts/rig/process.ts';
import { startKubeCluster, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { fillCluster, snapshotObjects } from '../../scripts/lab/fill.ts';
import { onHost, type LabHost } from '../../scripts/lab/hosts.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import { curl, until, type DaemonProcess } from '../support/daemon.ts';
import { daemonOn, lifeboatOn, writeSecret, type LabLifeboat } from '../support/lab.ts';
import { runCli } from '../support/lifeboat.ts';
import { etcdctlOn, kubectlOn, memberStatus } from '../support/restore-nodes.ts';
import { runbookBlock, shellLines } from '../support/runbook.ts';

const NET = 26;
const NAMES = ['cp-1', 'cp-2', 'cp-3'];
const NS = 'shop';
const SECTION = '## A namespace deleted by mistake';
/** The kinds of namespace `shop` compared across the restore (Pods apart: the scheduler writes to them). */
const SHOP_KINDS = ['deployments.apps', 'replicasets.apps', 'configmaps', 'secrets', 'serviceaccounts', 'orders.shop.lifeboat.dev'];
const PASSWORD = 'tr0ub4dor-and-3';

let work: string;
let cluster: KubeCluster;
let hosts: LabHost[];
let lb: LabLifeboat;
let pki: ApiPki;
let tokenFile: string;
const daemons: DaemonProcess[] = [];
const tokens = { viewer: generateToken(), operator: generateToken(), restorer: generateToken() };
const key = await generateIdentity();
/** Backups: before `shop` existed, with it, and after it was deleted. */
const backups: { before: string; with: string; after: string } = { before: '', with: '', after: '' };
/** What `shop` held when the backup with it was taken. */
let shopBefore: Map<string, string>;
let shopPods: string[];
let filledBefore: Map<string, string>;
/** The time of the `kubectl delete namespace`, as the operator reads it from the audit log. */
let deletedAt: string;
/** The live revision and a configmaps resourceVersion just before the restore. */
let revisionBefore: bigint;
let resourceVersionBefore: string;
let watches: { kubectl: Watch; etcdctl: Watch };
/** The revision just before shop was made: the etcdctl watch starts there, so it sees shop made before its deletion. */
let shopRevision: bigint;
/** Each test goes on from where the one before left the cluster. */
const reached = { disaster: false, restored: false };
/** What each daemon wrote to stderr that is not a JSON log line (a crash). */
const crashes = new Map<string, string>();

const daemonUrl = (i: number) => `https://${hosts[i]!.address}:8443`;
const clientEnv = (i = 0) => ({ LIFEBOAT_CLIENT__URL: daemonUrl(i), LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__TOKEN_FILE: tokenFile });
const crashed = () => [...crashes].map(([n, t]) => `${n}: ${t}`).join('\n');

/** A long-running command on a lab host, its output kept. */
interface Watch {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

function watchOn(host: LabHost, command: string, args: string[]): Watch {
  const [bin, ...rest] = onHost(host, command, args);
  const child = killOnExit(spawn(bin!, rest, { stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env['PATH'] } }));
  const w: Watch = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal }))),
    running: () => child.exitCode === null && child.signalCode === null,
  };
  child.stdout!.on('data', (d: Buffer) => (w.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (w.stderr += d.toString()));
  return w;
}

const ETCD_TLS = ['--endpoints=https://127.0.0.1:2379', '--cacert=/etc/kubernetes/pki/etcd/ca.crt', '--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt', '--key=/etc/kubernetes/pki/etcd/healthcheck-client.key'];

/** `lifeboat trigger backup --wait` on whichever daemon leads; the id of the backup it made. */
async function triggerBackup(): Promise<string> {
  let id: string | undefined;
  const tried: string[] = [];
  await until('a leader takes lifeboat trigger backup --wait', async () => {
    for (const i of [0, 1, 2]) {
      const run = await runCli(['trigger', 'backup', '--wait'], clientEnv(i));
      if (run.code === 0) {
        id = /succeeded \(backup (\S+)\)/.exec(run.stdout)?.[1];
        assert.ok(id, run.stdout);
        return true;
      }
      tried.push(run.stderr.trim().split('\n').at(-1) ?? '');
    }
    return false;
  }, 120_000).catch((err: Error) => {
    throw new Error(`${err.message}: ${tried.slice(-3).join(' | ')}${crashed()}`);
  });
  return id!;
}

/** Every object of `shop` that must come back, keyed `kind/name`: uid, creation, labels, data, spec, type. */
async function shopObjects(host?: LabHost): Promise<Map<string, string>> {
  const out = await cluster.kubectl(['get', ['namespaces', ...SHOP_KINDS].join(','), '-n', NS, '-o', 'json'], { host });
  const doc = JSON.parse(out.stdout) as { items: { kind: string; metadata: { namespace?: string; name: string; uid: string; labels?: unknown; creationTimestamp: string }; data?: unknown; spec?: unknown; type?: string }[] };
  const objects = new Map<string, string>();
  for (const o of doc.items) {
    if (o.kind === 'Namespace' && o.metadata.name !== NS) continue;
    objects.set(`${o.kind}/${o.metadata.name}`, JSON.stringify({ uid: o.metadata.uid, created: o.metadata.creationTimestamp, labels: o.metadata.labels, data: o.data, spec: o.kind === 'Namespace' ? undefined : o.spec, type: o.type }));
  }
  return objects;
}

/** The uids of the Pods the ReplicaSet of Deployment `web` owns. */
async function webPods(host?: LabHost): Promise<string[]> {
  const out = await cluster.kubectl(['get', 'pods', '-n', NS, '-l', 'app=web', '-o', 'json'], { host });
  const pods = (JSON.parse(out.stdout) as { items: { metadata: { uid: string; ownerReferences?: { kind: string }[]; deletionTimestamp?: string } }[] }).items;
  return pods.filter((p) => !p.metadata.deletionTimestamp && p.metadata.ownerReferences?.some((r) => r.kind === 'ReplicaSet')).map((p) => p.metadata.uid).sort();
}

async function replicaSetsOfWeb(host?: LabHost): Promise<{ name: string; uid: string; replicas: number }[]> {
  const out = await cluster.kubectl(['get', 'replicasets', '-n', NS, '-l', 'app=web', '-o', 'json'], { host });
  return (JSON.parse(out.stdout) as { items: { metadata: { name: string; uid: string }; spec: { replicas: number } }[] }).items.map((r) => ({ name: r.metadata.name, uid: r.metadata.uid, replicas: r.spec.replicas }));
}

const ORDERS_CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'orders.shop.lifeboat.dev' },
  spec: {
    group: 'shop.lifeboat.dev',
    names: { kind: 'Order', plural: 'orders', singular: 'order' },
    scope: 'Namespaced',
    versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { item: { type: 'string' }, quantity: { type: 'integer' } } } } } } }],
  },
};

function shopItems(): unknown[] {
  const meta = (name: string) => ({ name, namespace: NS, labels: { team: 'shop' } });
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { team: 'shop' } } },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('settings'), data: { currency: 'EUR', 'checkout.yaml': 'retries: 3\ntimeout: 30s\n' } },
    { apiVersion: 'v1', kind: 'Secret', metadata: meta('payment'), type: 'Opaque', stringData: { password: PASSWORD, merchant: 'shop-4711' } },
    { apiVersion: 'shop.lifeboat.dev/v1', kind: 'Order', metadata: meta('order-1'), spec: { item: 'lifeboat', quantity: 2 } },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta('web'),
      spec: { replicas: 2, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'registry.example/shop:2.1' }] } } },
    },
  ];
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-disaster-ns-'));
  const phases: string[] = [];
  cluster = await startKubeCluster({ net: NET, dir: work, names: NAMES, onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  console.log(`# lab: ${phases.join(', ')}`);
  hosts = cluster.hosts;
  await fillCluster(cluster, { namespaces: 3, targetMiB: 50 });

  pki = await makeApiPki(path.join(work, 'api-pki'), hosts.map((h) => `IP:${h.address}`));
  await writeSecret(path.join(work, 'tokens'), `${tokenLine(tokens.viewer, 'viewer', 'grafana')}\n${tokenLine(tokens.operator, 'operator', 'oncall')}\n${tokenLine(tokens.restorer, 'restorer', 'dr-team')}\n`);
  // The restorer's token file, as the runbook sets it up (it also runs backups: restorer includes operator).
  tokenFile = await writeSecret(path.join(work, 'restorer-token.txt'), `${tokens.restorer}\n`);
  const identityFile = await writeSecret(path.join(work, 'identity.txt'), identityFileText(key.identity, key.recipient, new Date()));
  lb = { work, storeDir: path.join(work, 'store'), recipient: key.recipient, identityFile };
  for (const host of hosts) {
    const d = await daemonOn(host, lb, {
      daemon: { stateDir: '/var/lib/lifeboat/state', schedules: { backup: 'off', prune: 'off', drill: 'off' }, election: { ttlSeconds: 5 }, shutdownGraceSeconds: 2 },
      api: { listen: { host: host.address, port: 8443 }, tls: { certFile: pki.server.cert, keyFile: pki.server.key }, tokensFile: path.join(work, 'tokens') },
      metrics: { listen: { host: '127.0.0.1', port: 9464 } },
    });
    d.child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString().split('\n').filter((l) => l !== '' && !l.startsWith('{')).join('\n');
      if (text) crashes.set(d.name, `${crashes.get(d.name) ?? ''}${text}\n`);
    });
    daemons.push(d);
  }
  backups.before = await triggerBackup();

  // The shop: a CRD made for it, then its objects; the controller manager makes the ReplicaSet and Pods.
  shopRevision = (await memberStatus(hosts[2]!)).revision;
  await cluster.kubectl(['apply', '-f', '-'], { input: JSON.stringify(ORDERS_CRD) });
  await cluster.kubectl(['wait', '--for=condition=Established', '--timeout=60s', `crd/${ORDERS_CRD.metadata.name}`]);
  await cluster.kubectl(['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'List', items: shopItems() }) });
  await until('the controller manager made the ReplicaSet of shop/web and its 2 Pods', async () => (await replicaSetsOfWeb()).length === 1 && (await webPods()).length === 2, 120_000);
  await until('the ServiceAccount controller made shop/default', async () => (await kubectlOn(hosts[0]!, ['get', 'serviceaccount', 'default', '-n', NS])).code === 0, 60_000);
  shopBefore = await shopObjects();
  shopPods = await webPods();
  filledBefore = await snapshotObjects(cluster);
  backups.with = await triggerBackup();
  assert.deepEqual(await shopObjects(), shopBefore, 'nothing in shop changed while the backup was taken');
});

after(async () => {
  for (const w of watches ? Object.values(watches) : []) if (w.running()) w.child.kill('SIGKILL');
  for (const d of daemons) d.child.kill('SIGKILL');
  await Promise.all(daemons.map((d) => d.exited));
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

test('the disaster: with a kubectl and an etcdctl watch open, namespace shop is deleted and gone; a backup is taken after it and a ConfigMap made elsewhere', async () => {
  watches = {
    kubectl: watchOn(hosts[1]!, kubernetesBinaries().kubectl, ['--kubeconfig', '/etc/kubernetes/admin.conf', 'get', 'configmaps', '-n', NS, '--watch', '--output-watch-events']),
    etcdctl: watchOn(hosts[2]!, etcdBinaries('3.6').etcdctl, [...ETCD_TLS, 'watch', '--prefix', `/registry/configmaps/${NS}/`, `--rev=${shopRevision}`]),
  };
  await until('the kubectl watch lists shop/settings', () => /^ADDED\s+settings\s/m.test(watches.kubectl.stdout), 60_000);
  await until('the etcdctl watch sees shop/settings', () => watches.etcdctl.stdout.includes(`/registry/configmaps/${NS}/settings`), 60_000);

  deletedAt = new Date().toISOString();
  await cluster.kubectl(['delete', 'namespace', NS, '--wait=false']);
  await until('namespace shop is gone', async () => /NotFound/.test((await kubectlOn(hosts[0]!, ['get', 'namespace', NS])).stderr), 180_000);
  assert.equal((await kubectlOn(hosts[0]!, ['get', 'orders', '-A', '-o', 'name'])).stdout.trim(), '', 'the custom resource went with it');
  await until('both watches saw shop/settings deleted', () => /^DELETED\s+settings\s/m.test(watches.kubectl.stdout) && watches.etcdctl.stdout.includes(`DELETE\n/registry/configmaps/${NS}/settings`), 30_000);

  // The next scheduled backup comes after the deletion: `latest` no longer holds shop.
  backups.after = await triggerBackup();
  await cluster.kubectl(['create', 'configmap', 'made-after-backup', '-n', 'app-1', '--from-literal=note=written after every backup']);
  revisionBefore = (await memberStatus(hosts[0]!)).revision;
  resourceVersionBefore = (JSON.parse((await cluster.kubectl(['get', '--raw', '/api/v1/namespaces/app-1/configmaps?limit=1'])).stdout) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
  assert.ok(BigInt(resourceVersionBefore) > 0n);
  assert.ok(watches.kubectl.running() && watches.etcdctl.running(), `both watches are still open: kubectl ${watches.kubectl.stderr}; etcdctl ${watches.etcdctl.stderr}`);
  reached.disaster = true;
});

test('the runbook\'s commands, run as written: they choose the last backup before the deletion and restore every member in place with one command', async () => {
  assert.ok(reached.disaster, 'the disaster happened');
  const block = await runbookBlock(SECTION);
  const lines = shellLines(block, {
    BEFORE: deletedAt,
    API: daemonUrl(0),
    CA: `--cacert ${pki.ca.cert}`,
    AUTH: `Authorization: Bearer ${tokens.restorer}`,
  });
  const commands = lines.flatMap((l) => ('argv' in l ? [l] : []));
  assert.ok(lines.some((l) => 'assign' in l && l.assign === 'BEFORE' && l.value === deletedAt), 'the block sets BEFORE, the time of the deletion');
  assert.ok(lines.some((l) => 'assign' in l && l.assign === 'NS' && l.value === NS), `the block's namespace is ${NS}`);
  const apply = commands.findIndex((c) => c.argv.join(' ') === `lifeboat restore apply --all --before ${deletedAt} --mode in-place`);
  assert.ok(apply > 0, `one command restores every member to the backup before the deletion:\n${block}`);
  for (const c of commands) assert.ok(['lifeboat', 'curl', 'kubectl'].includes(c.argv[0]!), `runs ${c.text}`);

  let rtoSeconds: number | undefined;
  for (const [n, c] of commands.entries()) {
    const [tool, ...args] = c.argv as [string, ...string[]];
    if (tool === 'curl') {
      const res = await curl(args);
      assert.equal(res.status, 200, `${c.text}: ${res.body}`);
      const found = (res.json as { backups: { manifest: { backupId: string } }[] }).backups;
      assert.deepEqual(found.map((b) => b.manifest.backupId), [backups.with], `${c.text} names the backup made with shop in it`);
    } else if (tool === 'kubectl') {
      const res = await kubectlOn(hosts[1]!, args);
      assert.equal(res.code, 0, `${c.text}: ${res.stderr}`);
      if (args.includes('jsonpath={.status.phase}')) assert.equal(res.stdout, 'Active', 'the restored namespace is not Terminating');
      else assert.match(res.stdout, /deployment\.apps\/web[\s\S]*replicaset\.apps\/web-[\s\S]*configmap\/settings[\s\S]*secret\/payment/, c.text);
    } else if (n === apply) {
      const started = performance.now();
      assert.ok(watches.kubectl.running() && watches.etcdctl.running(), 'the watches are open when the restore starts');
      const res = await lifeboatOn(hosts[0]!, lb, args, {}, clientEnv());
      assert.equal(res.code, 0, `${c.text}:\n${res.stdout}${res.stderr}${crashed()}`);
      assert.match(res.stdout, new RegExp(`restoring ${backups.with.replaceAll('.', '\\.')} `), 'it restores the backup made with shop in it');
      assert.match(res.stdout, /restore done on every member/);
      const target = BigInt(/every member starts at revision >= (\d+)/.exec(res.stdout)?.[1] ?? '0');
      assert.ok(target > revisionBefore, 'the revision bump covers every revision written since the backup');
      // Every member healthy at the new revision, and kubectl answering on every host.
      await until('every member serves the restored data and every apiserver is ready', async () => {
        for (const h of hosts) {
          const status = await memberStatus(h).catch(() => undefined);
          if (!status || status.revision < target || status.leader === '0') return false;
          const ready = await kubectlOn(h, ['get', '--raw', '/readyz']);
          if (ready.code !== 0 || ready.stdout.trim() !== 'ok') return false;
          if ((await kubectlOn(h, ['get', 'namespace', NS, '-o', 'name'])).code !== 0) return false;
        }
        return true;
      }, 300_000);
      rtoSeconds = (performance.now() - started) / 1000;
      console.log(`# RTO: ${rtoSeconds.toFixed(1)} s from \`${c.text.replace(/\s+#.*$/, '')}\` to every member healthy at revision >= ${target} and kubectl answering on every host (${/restore done on every member.*/.exec(res.stdout)?.[0] ?? ''})`);
    } else {
      const res = await lifeboatOn(hosts[0]!, lb, args, {}, clientEnv());
      assert.equal(res.code, 0, `${c.text}:\n${res.stdout}${res.stderr}`);
      if (args[0] === 'list') {
        const listed = [backups.after, backups.with, backups.before].map((id) => res.stdout.indexOf(id));
        assert.ok(listed.every((at, i) => at >= 0 && (i === 0 || at > listed[i - 1]!)), `lifeboat list shows the three backups, newest first:\n${res.stdout}`);
      } else {
        assert.deepEqual(args.slice(0, 2), ['restore', 'plan']);
        assert.match(res.stdout, new RegExp(`^backup {5}${backups.with.replaceAll('.', '\\.')}: made `, 'm'), `the plan names the backup made with shop in it:\n${res.stdout}`);
        assert.match(res.stdout, /^dry run {4}done$/m, res.stdout);
      }
    }
  }
  assert.ok(rtoSeconds !== undefined);
  reached.restored = true;
});

test('shop and every object in it are back as they were at the backup; the Secret reads back; the change made after the backup is gone', async () => {
  assert.ok(reached.restored, 'the restore ran');
  for (const h of hosts) {
    assert.deepEqual(await shopObjects(h), shopBefore, `kubectl on ${h.name} reads back every object of shop as it was`);
    assert.deepEqual(await snapshotObjects(cluster, h), filledBefore, `kubectl on ${h.name} reads back the rest of the cluster as it was`);
  }
  const secret = await kubectlOn(hosts[2]!, ['get', 'secret', 'payment', '-n', NS, '-o', 'jsonpath={.data.password}']);
  assert.equal(Buffer.from(secret.stdout, 'base64').toString(), PASSWORD, 'the Secret (encrypted at rest) decrypts to its data');
  const order = await kubectlOn(hosts[1]!, ['get', 'order', 'order-1', '-n', NS, '-o', 'jsonpath={.spec.item}/{.spec.quantity}']);
  assert.equal(order.stdout, 'lifeboat/2');
  const late = await kubectlOn(hosts[0]!, ['get', 'configmap', 'made-after-backup', '-n', 'app-1']);
  assert.equal(late.code, 1);
  assert.match(late.stderr, /NotFound/, 'what was written after the backup is lost, as the runbook says');
  assert.equal(crashed(), '');
  for (const d of daemons) assert.equal(d.child.exitCode, null, `${d.name} exited`);
});

test('watches: the ones open across the restore end; a new one from a revision before it is told that revision is compacted (etcd) and 410 Gone (apiserver)', async () => {
  assert.ok(reached.restored, 'the restore ran');
  await until('both watches opened before the restore have ended', () => !watches.kubectl.running() && !watches.etcdctl.running(), 120_000);
  const [k, e] = await Promise.all([watches.kubectl.exited, watches.etcdctl.exited]);
  console.log(`# the watches open across the restore ended: kubectl ${k.signal ?? `exit ${k.code}`} (${watches.kubectl.stderr.trim().split('\n').at(-1) ?? ''}); etcdctl ${e.signal ?? `exit ${e.code}`} (${watches.etcdctl.stderr.trim().split('\n').join('; ')})`);
  assert.equal(e.signal, null);
  assert.notEqual(e.code, 0, 'etcdctl\'s watch fails rather than carrying on');
  assert.match(watches.etcdctl.stderr, /watch (was|is) canceled/);
  assert.ok(!watches.etcdctl.stdout.slice(watches.etcdctl.stdout.lastIndexOf('DELETE')).includes('PUT'), 'the etcdctl watch never saw the restored keys as new writes');
  assert.equal(k.signal, null, 'kubectl\'s watch ended by itself');

  const old = await etcdctlOn(hosts[2]!, ['watch', '--prefix', `/registry/configmaps/${NS}/`, `--rev=${revisionBefore}`]).then(() => '', (err: Error) => err.message);
  assert.match(old, /required revision has been compacted/);
  const gone = await kubectlOn(hosts[1]!, ['get', '--raw', `/api/v1/namespaces/app-1/configmaps?watch=1&resourceVersion=${resourceVersionBefore}&timeoutSeconds=10`]);
  assert.match(gone.stdout + gone.stderr, /"code":410/);
  assert.match(gone.stdout + gone.stderr, /too old resource version/);
});

test('the lab\'s kube-controller-manager keeps working on the restored objects: shop/web scaled to 3 gets a third Pod from the same ReplicaSet', async () => {
  assert.ok(reached.restored, 'the restore ran');
  const [rs] = await replicaSetsOfWeb();
  assert.ok(rs, 'the ReplicaSet of shop/web is back');
  assert.deepEqual(await webPods(), shopPods, 'its Pods are back, the same ones');
  await cluster.kubectl(['scale', 'deployment', 'web', '-n', NS, '--replicas=3']);
  let pods: string[] = [];
  await until('the Deployment and ReplicaSet controllers make a third Pod', async () => {
    const sets = await replicaSetsOfWeb();
    pods = await webPods();
    return sets.length === 1 && sets[0]!.uid === rs.uid && sets[0]!.replicas === 3 && pods.length === 3;
  }, 120_000);
  for (const uid of shopPods) assert.ok(pods.includes(uid), 'the restored Pods are kept, not replaced');
});
