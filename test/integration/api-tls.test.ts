import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ApiClient, followJob } from '../../src/api/client.ts';
import { createServers, type Servers } from '../../src/api/server.ts';
import { generateToken, tokenLine } from '../../src/api/tokens.ts';
import type { Config } from '../../src/config/schema.ts';
import { generateIdentity } from '../../src/crypto/age.ts';
import type { Job } from '../../src/jobs/job.ts';
import { Catalog } from '../../src/store/catalog.ts';
import { FsStore } from '../../src/store/fs-store.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { startEtcd, type EtcdCluster } from '../../scripts/rig/etcd.ts';
import { apiRig, type ApiRig } from '../support/api-daemon.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';
import { captureLog, type LogCapture } from '../support/api-fakes.ts';
import { configDoc, configOf, errorLines, runCli } from '../support/lifeboat.ts';
import { TEST_SIGNER, TEST_TRUST } from '../support/signing.ts';

/**
 * The API on a real HTTPS listener (127.0.0.1, free port) with certificates from a test CA,
 * driven with the real curl binary and the CLI; jobs are real backups of a real TLS etcd into a
 * directory store, and real verifications of them.
 */
const run = promisify(execFile);

let work: string;
let pki: ApiPki;
let cluster: EtcdCluster;
let config: Config;
let storeDir: string;
let rig: ApiRig;
let servers: Servers;
let follower: Servers;
let capture: LogCapture;
let api: string;
let metricsUrl: string;
let followerUrl: string;
const tokens = { viewer: generateToken(), operator: generateToken() };

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-api-'));
  pki = await makeApiPki(path.join(work, 'pki'));
  const hostRoot = path.join(work, 'host');
  const tree = await makeKubeadmTree(path.join(hostRoot, 'etc/kubernetes'));
  cluster = await startEtcd({ tree, members: 1, dataRoot: path.join(work, 'etcd') });
  const tokensFile = path.join(work, 'tokens');
  await writeFile(tokensFile, `${tokenLine(tokens.viewer, 'viewer', 'grafana')}\n${tokenLine(tokens.operator, 'operator', 'ci')}\n`, { mode: 0o600 });
  storeDir = path.join(work, 'store');
  const { recipient } = await generateIdentity();
  config = configOf(
    configDoc(cluster, hostRoot, storeDir, [recipient], {
      node: 'node-a',
      // Every backup of this file stays, for the DELETE checks.
      retention: { afterBackup: false },
      daemon: { stateDir: path.join(work, 'state') },
      api: {
        listen: { host: '127.0.0.1', port: 0 },
        tls: { certFile: pki.server.cert, keyFile: pki.server.key, clientCaFile: pki.ca.cert },
        tokensFile,
        clientCertRoles: [
          { o: 'lifeboat-operators', role: 'operator' },
          { cn: 'alice', role: 'viewer' },
        ],
      },
      metrics: { listen: { host: '127.0.0.1', port: 0 } },
    }),
  );
  capture = captureLog();
  const store = new FsStore(storeDir);
  const catalog = new Catalog(store, config.cluster, { trust: TEST_TRUST });
  rig = apiRig({
    config,
    log: capture.log,
    store,
    catalog,
  });
  servers = await createServers(rig.deps);
  const ports = await servers.listen();
  api = `https://127.0.0.1:${ports.apiPort}`;
  metricsUrl = `http://127.0.0.1:${ports.metricsPort}`;
  // A second instance on the same store that is not the leader.
  const other = apiRig({ config, log: capture.log, store, catalog, handlers: {}, leadership: { isLeader: () => false, leader: () => 'node-a' } });
  follower = await createServers({ ...other.deps, identity: { ...other.deps.identity, node: 'node-b' } });
  followerUrl = `https://127.0.0.1:${(await follower.listen()).apiPort}`;
});

after(async () => {
  await servers?.close();
  await follower?.close();
  await rig?.runner.drain(0);
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

interface CurlResult {
  /** curl's exit code: 0 when an HTTP response came. */
  exit: number;
  status: number;
  headers: Record<string, string>;
  body: string;
  json: () => Record<string, unknown>;
}

async function curl(args: string[]): Promise<CurlResult> {
  let stdout: string;
  let exit = 0;
  try {
    ({ stdout } = await run('curl', ['-sS', '-i', '--max-time', '20', ...args]));
  } catch (err) {
    exit = (err as { code?: number }).code ?? -1;
    stdout = (err as { stdout?: string }).stdout ?? '';
  }
  const split = stdout.indexOf('\r\n\r\n');
  const head = split < 0 ? stdout : stdout.slice(0, split);
  const body = split < 0 ? '' : stdout.slice(split + 4);
  const [statusLine = '', ...headerLines] = head.split('\r\n');
  const headers = Object.fromEntries(headerLines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { exit, status: Number(statusLine.split(' ')[1] ?? 0), headers, body, json: () => JSON.parse(body) as Record<string, unknown> };
}

const ca = () => ['--cacert', pki.ca.cert];
const bearer = (token: string) => ['-H', `Authorization: Bearer ${token}`];
const cert = (pair: { cert: string; key: string }) => ['--cert', pair.cert, '--key', pair.key];

/** Polls a job until it ends (the test runner's timeout bounds the wait). */
async function finished(id: string): Promise<Job> {
  const client = new ApiClient({ url: api, ca: await readFile(pki.ca.cert), token: tokens.viewer });
  return followJob(client, await client.job(id), 100, () => undefined);
}

test('no client certificate and no token: 401 with WWW-Authenticate, JSON error', async () => {
  const res = await curl([...ca(), `${api}/v1/backups`]);
  assert.equal(res.exit, 0);
  assert.equal(res.status, 401);
  assert.match(res.headers['www-authenticate'] ?? '', /^Bearer/);
  assert.equal(res.json().code, 'UNAUTHENTICATED');
  const post = await curl([...ca(), '-X', 'POST', `${api}/v1/backups`]);
  assert.equal(post.status, 401);
  // /healthz, /readyz and /openapi.json need nothing.
  assert.equal((await curl([...ca(), `${api}/healthz`])).status, 200);
  assert.equal((await curl([...ca(), `${api}/readyz`])).status, 200);
  const doc = await curl([...ca(), `${api}/openapi.json`]);
  assert.equal(doc.status, 200);
  assert.ok((doc.json().paths as Record<string, unknown>)['/v1/backups/{id}/verify']);
});

test('/v1 is HTTPS only: plain HTTP to the API port gets no answer', async () => {
  const res = await curl([`${api.replace('https:', 'http:')}/v1/backups`]);
  assert.notEqual(res.exit, 0);
  assert.equal(res.status, 0);
});

test('a viewer token may GET but a POST is 403', async () => {
  assert.equal((await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups`])).status, 200);
  const res = await curl([...ca(), ...bearer(tokens.viewer), '-X', 'POST', `${api}/v1/backups`]);
  assert.equal(res.status, 403);
  assert.equal(res.json().code, 'FORBIDDEN');
});

test('an operator token starts a backup: 202, the same Idempotency-Key gets the same job, and the job completes', async () => {
  const post = (key: string) => curl([...ca(), ...bearer(tokens.operator), '-X', 'POST', '-H', `Idempotency-Key: ${key}`, `${api}/v1/backups`]);
  const first = await post('first-backup');
  assert.equal(first.status, 202, first.body);
  const job = (first.json() as { job: Job; created: boolean }).job;
  assert.equal((first.json() as { created: boolean }).created, true);
  assert.equal(first.headers.location, `/v1/jobs/${job.id}`);
  assert.equal(job.requestedBy, 'ci');
  const again = await post('first-backup');
  assert.equal(again.status, 202);
  assert.equal((again.json() as { job: Job }).job.id, job.id);
  assert.equal((again.json() as { created: boolean }).created, false);

  const done = await finished(job.id);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  assert.ok(done.backupId);
  assert.ok(done.progress.bytesDone > 0);
  // After the job ended the key still names it.
  assert.equal(((await post('first-backup')).json() as { job: Job }).job.id, job.id);

  const list = await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups?limit=5`]);
  assert.equal(list.status, 200);
  const backups = (list.json() as { backups: { manifest: { backupId: string } }[] }).backups;
  assert.deepEqual(backups.map((b) => b.manifest.backupId), [done.backupId]);
  const one = await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups/${done.backupId}`]);
  assert.equal((one.json() as { manifest: { etcd: { memberName: string } } }).manifest.etcd.memberName, 'm1');
  const audit = capture.lines.filter((l) => l.audit === true && l.jobId === job.id);
  assert.equal(audit.length, 3);
  assert.deepEqual(audit.map((l) => [l.who, l.via, l.status, l.created]), [['ci', 'token', 202, true], ['ci', 'token', 202, false], ['ci', 'token', 202, false]]);
});

test('a client certificate with O mapped to operator starts a verification; CN alice is a viewer; another CA is 401; an unmapped one 403', async () => {
  const verify = await curl([...ca(), ...cert(pki.operatorClient), '-X', 'POST', '-H', 'Content-Type: application/json', '-d', '{"deep":false}', `${api}/v1/backups/latest/verify`]);
  assert.equal(verify.status, 202, verify.body);
  const job = (verify.json() as { job: Job }).job;
  assert.equal(job.kind, 'verify');
  assert.equal(job.requestedBy, 'ci-bot');
  const done = await finished(job.id);
  assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
  const entry = (await curl([...ca(), ...cert(pki.viewerClient), `${api}/v1/backups/latest`])).json() as { verification?: { result: string; level: string } };
  assert.deepEqual([entry.verification?.result, entry.verification?.level], ['passed', 'ciphertext']);
  assert.ok(capture.lines.some((l) => l.audit === true && l.jobId === job.id && l.who === 'ci-bot' && l.via === 'cert' && l.role === 'operator'));

  const viewerPost = await curl([...ca(), ...cert(pki.viewerClient), '-X', 'POST', `${api}/v1/backups`]);
  assert.equal(viewerPost.status, 403);
  const stranger = await curl([...ca(), ...cert(pki.strangerClient), `${api}/v1/backups`]);
  assert.equal(stranger.status, 401);
  assert.equal(stranger.json().code, 'UNAUTHENTICATED');
  assert.match(stranger.json().message as string, /not trusted/);
  const unmapped = await curl([...ca(), ...cert(pki.unmappedClient), `${api}/v1/backups`]);
  assert.equal(unmapped.status, 403);
  assert.match(unmapped.json().message as string, /O=nobody,CN=mallory maps to no role/);
  // A bad token decides even when a good certificate comes along.
  assert.equal((await curl([...ca(), ...cert(pki.operatorClient), ...bearer('lbt_wrong'), `${api}/v1/backups`])).status, 401);
});

test('an instance that is not the leader answers POST with 409 and the leader, and serves GETs from the shared store', async () => {
  const res = await curl([...ca(), ...bearer(tokens.operator), '-X', 'POST', `${followerUrl}/v1/backups`]);
  assert.equal(res.status, 409);
  assert.deepEqual([res.json().code, res.json().leader], ['NOT_LEADER', 'node-a']);
  const list = await curl([...ca(), ...bearer(tokens.viewer), `${followerUrl}/v1/backups`]);
  assert.equal(list.status, 200);
  assert.equal((list.json() as { backups: unknown[] }).backups.length, 1);
});

test('/metrics, /healthz and /readyz on the plain HTTP listener', async () => {
  const metrics = await curl([`${metricsUrl}/metrics`]);
  assert.equal(metrics.status, 200);
  assert.match(metrics.headers['content-type'] ?? '', /^text\/plain/);
  assert.match(metrics.body, /^lifeboat_backup_total\{result="success",cluster="it"\} 1$/m);
  assert.match(metrics.body, /^lifeboat_verify_total\{result="success",level="ciphertext",cluster="it"\} 1$/m);
  assert.equal((await curl([`${metricsUrl}/healthz`])).status, 200);
  assert.equal((await curl([`${metricsUrl}/readyz`])).status, 200);
  assert.equal((await curl([`${metricsUrl}/v1/backups`])).status, 404);
});

test('the CLI: status, trigger backup --wait, jobs, and a failing verification exits 1', async () => {
  const tokenFile = path.join(work, 'operator.token');
  await writeFile(tokenFile, `${tokens.operator}\n`, { mode: 0o600 });
  const empty = path.join(work, 'empty.yaml');
  await writeFile(empty, '');
  const env = { LIFEBOAT_CONFIG: empty, LIFEBOAT_CLIENT__URL: api, LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__TOKEN_FILE: tokenFile };

  const triggered = await runCli(['trigger', 'backup', '--wait', '--poll-interval', '100'], env);
  assert.equal(triggered.code, 0, triggered.stderr);
  assert.match(triggered.stdout, /^started backup job (job-\S+)$/m);
  assert.match(triggered.stdout, /: succeeded, phase done, .* backup \S+-r\d+$/m);
  assert.match(triggered.stdout, /^job \S+ succeeded \(backup (\S+)\) in [\d.]+ s$/m);
  const newest = /\(backup (\S+)\)/.exec(triggered.stdout)?.[1];

  const status = await runCli(['status'], env);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^daemon\s+node-a \(cluster it, lifeboat \d+\.\d+\.\d+\S*\) at https:\/\/127\.0\.0\.1:\d+$/m);
  assert.match(status.stdout, /^leader\s+this instance$/m);
  assert.match(status.stdout, /^ready\s+yes$/m);
  assert.match(status.stdout, new RegExp(`^newest\\s+${newest!.replace('.', '\\.')} at .*never checked$`, 'm'));

  const certEnv = { LIFEBOAT_CONFIG: empty, LIFEBOAT_CLIENT__URL: api, LIFEBOAT_CLIENT__CA_FILE: pki.ca.cert, LIFEBOAT_CLIENT__CERT_FILE: pki.viewerClient.cert, LIFEBOAT_CLIENT__KEY_FILE: pki.viewerClient.key };
  const listed = await runCli(['jobs', '--json'], certEnv);
  assert.equal(listed.code, 0, listed.stderr);
  const all = JSON.parse(listed.stdout) as Job[];
  assert.deepEqual(all.map((j) => [j.kind, j.state]), [['backup', 'succeeded'], ['verify', 'succeeded'], ['backup', 'succeeded']]);

  // Damage the newest archive: its verification fails, and --wait exits 1 with the reason.
  const dir = path.join(storeDir, config.cluster, 'backups', newest!);
  const archive = (await readdir(dir)).find((f) => f.startsWith('archive'))!;
  await writeFile(path.join(dir, archive), 'not the archive any more');
  const failed = await runCli(['trigger', 'verify', newest!, '--wait', '--poll-interval', '100'], env);
  assert.equal(failed.code, 1, failed.stdout);
  assert.match(failed.stdout, /^started verify job/m);
  assert.match(errorLines(failed.stderr)[0] ?? '', /^lifeboat: error: job \S+ \(verify\) failed: archive \S+ is 24 bytes, but its manifest says \d+/);
  const viewerTrigger = await runCli(['trigger', 'backup'], certEnv);
  assert.equal(viewerTrigger.code, 1);
  assert.match(viewerTrigger.stderr, /role viewer/);
});

test('DELETE: an operator deletes an older backup (204); the newest and the newest verified are protected (409)', async () => {
  const post = await curl([...ca(), ...bearer(tokens.operator), '-X', 'POST', `${api}/v1/backups`]);
  assert.equal(post.status, 202);
  assert.equal((await finished((post.json() as { job: Job }).job.id)).state, 'succeeded');
  const list = (await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups`])).json() as { backups: { manifest: { backupId: string }; verification?: { result: string } }[] };
  // Newest first: the new one (never checked), the damaged one (its check failed), the first (verified).
  assert.deepEqual(list.backups.map((b) => b.verification?.result), [undefined, 'failed', 'passed']);
  const [newest, damaged, verified] = list.backups.map((b) => b.manifest.backupId);
  const del = (id: string | undefined) => curl([...ca(), ...bearer(tokens.operator), '-X', 'DELETE', `${api}/v1/backups/${id}`]);
  for (const id of [newest, verified]) {
    const refused = await del(id);
    assert.equal(refused.status, 409);
    assert.equal(refused.json().code, 'BACKUP_PROTECTED');
  }
  const deleted = await del(damaged);
  assert.equal(deleted.status, 204);
  assert.equal(deleted.body, '');
  const after = (await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups`])).json() as typeof list;
  assert.deepEqual(after.backups.map((b) => b.manifest.backupId), [newest, verified]);
  assert.equal((await del(damaged)).status, 404);
  assert.equal((await curl([...ca(), ...bearer(tokens.viewer), '-X', 'DELETE', `${api}/v1/backups/${verified}`])).status, 403);
  assert.ok(capture.lines.some((l) => l.audit === true && l.method === 'DELETE' && l.status === 204 && (l.params as { id: string }).id === damaged && l.who === 'ci'));
});

test('a manifest that cannot be read is left out of the listing; asked for by id, the API says why (typed 500)', async () => {
  const id = '29991231T000000.000Z-r1';
  const dir = path.join(storeDir, config.cluster, 'backups', id);
  await mkdir(dir, { recursive: true });
  // Signed by the trusted key, so what is refused is the manifest itself.
  const truncated = Buffer.from('{"format": "lifeboat-archive", trunc');
  await writeFile(path.join(dir, 'manifest.json'), truncated);
  await writeFile(path.join(dir, 'manifest.json.sig'), TEST_SIGNER.sign(truncated));
  try {
    const res = await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups`]);
    assert.equal(res.status, 200, res.body);
    assert.ok(!(res.json() as { backups: { manifest: { backupId: string } }[] }).backups.some((b) => b.manifest.backupId === id));
    const one = await curl([...ca(), ...bearer(tokens.viewer), `${api}/v1/backups/${id}`]);
    assert.equal(one.status, 500);
    assert.equal(one.json().code, 'ARCHIVE_INVALID');
    assert.match(one.json().message as string, /is not JSON/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Polls `probe` until `ok` holds; fails naming what it waited for once `timeoutMs` have passed. */
async function until<T>(what: string, probe: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(value)} after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The serial of the certificate a new TLS connection to `port` is served. */
function servedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false }, () => {
      const serial = socket.getPeerCertificate().serialNumber;
      socket.end();
      resolve(serial);
    });
    socket.once('error', reject);
  });
}

const serialOf = async (file: string) => new X509Certificate(await readFile(file)).serialNumber;

/** As cert-manager (the kubelet) does it: the new file appears whole, by rename. */
async function install(from: string, to: string): Promise<void> {
  await copyFile(from, `${to}.new`);
  await rename(`${to}.new`, to);
}

test('the certificate and the client CA are reloaded when their files change; a bad pair keeps the one in use', async () => {
  const dir = path.join(work, 'rotating');
  await mkdir(dir, { recursive: true });
  const files = { certFile: path.join(dir, 'tls.crt'), keyFile: path.join(dir, 'tls.key'), clientCaFile: path.join(dir, 'client-ca.crt') };
  await install(pki.server.cert, files.certFile);
  await install(pki.server.key, files.keyFile);
  await install(pki.ca.cert, files.clientCaFile);
  const renewed = await makeApiPki(path.join(work, 'pki-renewed'));
  const rotating = await createServers({ ...rig.deps, api: { ...config.api, tls: { ...files, reloadIntervalSeconds: 1 } } }, { tlsReloadIntervalMs: 50 });
  try {
    const { apiPort } = await rotating.listen();
    const url = `https://127.0.0.1:${apiPort}/v1/jobs`;
    const asAlice = (pair: { cert: string; key: string }, trust: string) => curl(['--cacert', trust, ...cert(pair), url]);
    assert.equal(await servedSerial(apiPort), await serialOf(pki.server.cert));
    assert.equal((await asAlice(pki.viewerClient, pki.ca.cert)).status, 200);

    // The serving pair is renewed: new connections get the new certificate.
    await install(renewed.server.key, files.keyFile);
    await install(renewed.server.cert, files.certFile);
    const next = await serialOf(renewed.server.cert);
    await until('the renewed certificate served', () => servedSerial(apiPort), (serial) => serial === next);

    // The client CA is replaced: its clients get in, the old CA's do not.
    await install(renewed.ca.cert, files.clientCaFile);
    await until('a client of the new CA accepted', async () => (await asAlice(renewed.viewerClient, renewed.ca.cert)).status, (status) => status === 200);
    assert.equal((await asAlice(pki.viewerClient, renewed.ca.cert)).status, 401);

    // A certificate that does not match the key: logged, and the renewed pair stays in use.
    const complaints = () => capture.lines.filter((l) => l.msg === 'the API TLS files changed but are not a usable set; keeping the certificate in use').length;
    const before = complaints();
    await install(pki.server.cert, files.certFile);
    await until('the bad pair reported', async () => complaints(), (n) => n > before);
    assert.equal(await servedSerial(apiPort), next);
    assert.equal((await asAlice(renewed.viewerClient, renewed.ca.cert)).status, 200);
  } finally {
    await rotating.close();
  }
});
