import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ApiPki } from '../support/api-pki.ts';
import { curl, sample, scrape, until, type DaemonProcess } from '../support/daemon.ts';
import { startDaemonTrio, type DaemonTrio } from '../support/daemon-trio.ts';
import { startRoundRobin, type RoundRobin } from '../support/round-robin.ts';

/**
 * Three `lifeboat serve` processes on a 3-member etcd, reached the way a user reaches them: one
 * address (a Service) that hands each connection to the next instance. Leader-only work that
 * lands on a follower is forwarded to the leader; jobs are found whichever instance answers.
 */
let work: string;
let trio: DaemonTrio | undefined;
let pki: ApiPki;
let service: RoundRobin;
let tokens: DaemonTrio['tokens'];
let daemons: DaemonProcess[] = [];

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-forward-'));
  trio = await startDaemonTrio(work, {
    populate: { keys: 100, valueBytes: [64, 512], seed: 5 },
    daemon: { election: { ttlSeconds: 4 } },
    // No advertiseURL: on a specific listen address it is https://<that address>:<bound port>.
    api: (apiPki) => ({ tls: { certFile: apiPki.server.cert, keyFile: apiPki.server.key, clientCaFile: apiPki.ca.cert, peerCaFile: apiPki.ca.cert } }),
  });
  ({ pki, tokens, daemons } = trio);
  service = await startRoundRobin(daemons.map((d) => d.ports.api));
});

after(async () => {
  await service?.close();
  await trio?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

interface Answer {
  status: number;
  json: Record<string, unknown> | undefined;
  body: string;
  headers: Map<string, string>;
}

let calls = 0;
/** curl, keeping the response headers (lower-cased names). */
async function call(args: string[]): Promise<Answer> {
  const file = path.join(work, `headers-${calls++}`);
  const res = await curl(['-D', file, ...args]);
  const headers = new Map<string, string>();
  for (const line of (await readFile(file, 'utf8')).split('\r\n')) {
    const at = line.indexOf(':');
    if (at > 0) headers.set(line.slice(0, at).trim().toLowerCase(), line.slice(at + 1).trim());
  }
  return { ...res, headers };
}

const ca = () => ['--cacert', pki.ca.cert];
const bearer = (token: string) => ['-H', `Authorization: Bearer ${token}`];
const viaService = (route: string) => `https://127.0.0.1:${service.port}${route}`;
const direct = (d: DaemonProcess, route: string) => `https://127.0.0.1:${d.ports.api}${route}`;
const urlOf = (d: DaemonProcess) => `https://127.0.0.1:${d.ports.api}`;

/** The one leader, once every instance agrees on it. */
async function settledLeader(): Promise<{ leader: DaemonProcess; followers: DaemonProcess[] }> {
  let leader: DaemonProcess | undefined;
  await until('one leader that every instance names', async () => {
    const flags = await Promise.all(daemons.map(async (d) => sample(await scrape(d.ports.metrics), 'lifeboat_is_leader') === 1));
    const leading = daemons.filter((_, i) => flags[i]);
    if (leading.length !== 1) return false;
    leader = leading[0]!;
    const named = await Promise.all(daemons.map(async (d) => {
      const status = await curl([...ca(), ...bearer(tokens.viewer), direct(d, '/v1/status')]);
      return (status.json?.leader as { identity?: string } | undefined)?.identity;
    }));
    return named.every((n) => n === leader!.name);
  }, 30_000);
  return { leader: leader!, followers: daemons.filter((d) => d !== leader) };
}

test('through one address: every POST /v1/backups is 202 from the leader whichever instance takes it, and its job is found on every try', async () => {
  const { leader, followers } = await settledLeader();
  const relayedBy = new Set<string>();
  const jobs = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const posted = await call([...ca(), ...bearer(tokens.operator), '-H', `Idempotency-Key: fwd-${i}`, '-X', 'POST', viaService('/v1/backups')]);
    assert.equal(posted.status, 202, `POST ${i}: ${posted.body}`);
    assert.equal(posted.headers.get('lifeboat-node'), leader.name, `POST ${i}: the leader answered`);
    const job = posted.json?.job as { id: string; kind: string };
    assert.equal(job.kind, 'backup');
    assert.equal(posted.headers.get('location'), `/v1/jobs/${job.id}`, `POST ${i}: the leader's Location`);
    const via = posted.headers.get('lifeboat-forwarded-by');
    if (via !== undefined) relayedBy.add(via);
    jobs.add(job.id);
    // The job is found through the same address, on each of the three instances in turn.
    for (let j = 0; j < 3; j++) {
      const got = await call([...ca(), ...bearer(tokens.viewer), viaService(`/v1/jobs/${job.id}`)]);
      assert.equal(got.status, 200, `GET job ${job.id} (try ${j}): ${got.body}`);
      assert.equal((got.json?.job as { id: string }).id, job.id);
      assert.equal(got.headers.get('lifeboat-node'), leader.name, 'the leader holds the job and names itself');
    }
  }
  // Six POSTs over three instances in turn: each follower took two of them and relayed them.
  assert.deepEqual([...relayedBy].sort(), followers.map((f) => f.name).sort());
  for (const port of daemons.map((d) => d.ports.api)) assert.ok((service.counts.get(port) ?? 0) >= 8, `every instance took connections: ${JSON.stringify([...service.counts])}`);

  // The same Idempotency-Key again, through a follower, is the same job.
  const again = await call([...ca(), ...bearer(tokens.operator), '-H', 'Idempotency-Key: fwd-0', '-X', 'POST', direct(followers[0]!, '/v1/backups')]);
  assert.equal(again.status, 202, again.body);
  assert.ok(jobs.has((again.json?.job as { id: string }).id), 'the key is the caller\'s, wherever it lands');

  // Every instance names itself on its own answers, and the followers' audit lines say where they sent the work.
  for (const d of daemons) {
    const status = await call([...ca(), ...bearer(tokens.viewer), direct(d, '/v1/status')]);
    assert.equal(status.headers.get('lifeboat-node'), d.name);
  }
  for (const f of followers) {
    assert.ok(f.logs.some((l) => l.audit === true && l.forwardedTo === leader.name && l.status === 202), `${f.name} audited a forwarded POST`);
  }
  assert.ok(leader.logs.some((l) => l.audit === true && followers.some((f) => f.name === l.forwardedBy) && l.status === 202), 'the leader audited who relayed it');
});

test('a POST authenticated by a client certificate alone is not forwarded: a follower answers 409 with the leader and its URL', async () => {
  const { leader, followers } = await settledLeader();
  const cert = ['--cert', pki.operatorClient.cert, '--key', pki.operatorClient.key];
  for (const f of followers) {
    const res = await call([...ca(), ...cert, '-X', 'POST', direct(f, '/v1/backups')]);
    assert.equal(res.status, 409, res.body);
    assert.equal(res.json?.code, 'NOT_LEADER');
    assert.equal(res.json?.leader, leader.name);
    assert.equal(res.json?.leaderUrl, urlOf(leader));
    assert.match(String(res.json?.hint), /certificate/);
    assert.equal(res.headers.get('lifeboat-node'), f.name);
  }
  // Through the one address: three connections reach the three instances; only the leader takes it.
  const statuses = [];
  for (let i = 0; i < 3; i++) statuses.push((await call([...ca(), ...cert, '-X', 'POST', viaService('/v1/backups')])).status);
  assert.deepEqual(statuses.sort(), [202, 409, 409]);
  // A job id a follower does not know, asked with a certificate: 404 that points at the leader.
  const unknown = await call([...ca(), ...cert, direct(followers[0]!, '/v1/jobs/job-20200101T000000.000Z-000000')]);
  assert.equal(unknown.status, 404, unknown.body);
  assert.match(String(unknown.json?.hint), new RegExp(urlOf(leader).replace(/[.]/g, '\\.')));
});

test('a forwarded request is never forwarded again: marked as forwarded, it gets 409 from a follower', async () => {
  const { leader, followers } = await settledLeader();
  const follower = followers[0]!;
  const before = leader.logs.length;
  const res = await call([...ca(), ...bearer(tokens.operator), '-H', `Lifeboat-Forwarded-By: ${followers[1]!.name}`, '-X', 'POST', direct(follower, '/v1/backups')]);
  assert.equal(res.status, 409, res.body);
  assert.equal(res.json?.code, 'NOT_LEADER');
  assert.equal(res.json?.leader, leader.name);
  assert.equal(res.headers.get('lifeboat-node'), follower.name);
  assert.ok(!leader.logs.slice(before).some((l) => l.audit === true), 'nothing reached the leader');
  // The same for a job lookup: a forwarded GET of an unknown job is answered where it lands.
  const job = await call([...ca(), ...bearer(tokens.viewer), '-H', 'Lifeboat-Forwarded-By: someone', direct(follower, '/v1/jobs/job-20200101T000000.000Z-000000')]);
  assert.equal(job.status, 404, job.body);
  assert.equal(job.headers.get('lifeboat-node'), follower.name);
});
