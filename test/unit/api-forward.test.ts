import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:https';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FORWARDED_BY, forwardToLeader, NODE_HEADER, peerTrust, routeToLeader, type PeerTrust, type RouteFacts } from '../../src/api/forward.ts';
import { ConfigError, DaemonUnreachableError } from '../../src/errors/errors.ts';
import { makeApiPki, type ApiPki } from '../support/api-pki.ts';

const facts: RouteFacts = { node: 'cp-1', isLeader: false, leader: 'cp-2', leaderUrl: 'https://10.0.0.2:8443', via: 'token', forwarded: false, canForward: true, method: 'POST' };

test('which requests go to the leader: a bearer token to a known leader URL, once', () => {
  assert.deepEqual(routeToLeader({ ...facts, isLeader: true }), { kind: 'local' });
  assert.deepEqual(routeToLeader(facts), { kind: 'forward', leader: 'cp-2', url: 'https://10.0.0.2:8443' });
  const refused = (f: Partial<RouteFacts>) => {
    const r = routeToLeader({ ...facts, ...f });
    assert.equal(r.kind, 'refuse', JSON.stringify(f));
    return r as Extract<typeof r, { kind: 'refuse' }>;
  };
  assert.match(refused({ leader: undefined, leaderUrl: undefined }).reason, /no leader/);
  assert.match(refused({ leader: 'cp-1' }).reason, /not confirmed/, 'never to itself');
  const again = refused({ forwarded: true });
  assert.match(again.reason, /not forwarded again/);
  assert.match(again.hint, /cp-2 at https:\/\/10\.0\.0\.2:8443/);
  const cert = refused({ via: 'cert' });
  assert.match(cert.hint, /client certificate .* cannot be forwarded.*https:\/\/10\.0\.0\.2:8443.*bearer token/);
  assert.equal(cert.url, 'https://10.0.0.2:8443');
  assert.match(refused({ leaderUrl: undefined }).hint, /older version/);
  assert.match(refused({ canForward: false }).hint, /api\.tls\.peerCaFile on cp-1/);
});

let work: string;
let pki: ApiPki;
let server: Server;
let url: string;
/** What the fake leader does with the next request. */
let behave: (req: import('node:http').IncomingMessage, body: string, res: import('node:http').ServerResponse) => void;

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-forward-'));
  pki = await makeApiPki(path.join(work, 'pki'));
  server = createServer({ cert: await readFile(pki.server.cert), key: await readFile(pki.server.key) }, (req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => behave(req, body, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  if (work) await rm(work, { recursive: true, force: true });
});

const tlsOf = (certFile: string, peerCaFile?: string) => ({ certFile, keyFile: pki.server.key, reloadIntervalSeconds: 30, ...(peerCaFile ? { peerCaFile } : {}) });

test("the leader's certificate is checked against api.tls.peerCaFile, else the CA chain in api.tls.certFile, else nothing is forwarded", async () => {
  assert.deepEqual(peerTrust(tlsOf(pki.server.cert, pki.ca.cert))?.ca, [(await readFile(pki.ca.cert, 'utf8')).trim()]);
  assert.equal(peerTrust(tlsOf(pki.server.cert)), undefined, 'the leaf alone: no anchor');
  const chained = path.join(work, 'chain.crt');
  await writeFile(chained, `${await readFile(pki.server.cert, 'utf8')}${await readFile(pki.ca.cert, 'utf8')}`);
  const fromChain = peerTrust(tlsOf(chained));
  assert.deepEqual(fromChain?.ca, [(await readFile(pki.ca.cert, 'utf8')).trim()]);
  assert.equal(fromChain?.partialChain, true);
  assert.throws(() => peerTrust(tlsOf(pki.server.cert, path.join(work, 'absent.crt'))), (err: unknown) => err instanceof ConfigError && err.field === '/api/tls/peerCaFile');
  assert.throws(() => peerTrust(tlsOf(pki.server.cert, pki.server.key)), /no PEM certificate/);
});

const request = (trust: PeerTrust, more: Partial<Parameters<typeof forwardToLeader>[0]> = {}) =>
  forwardToLeader({
    leader: 'cp-2',
    url,
    method: 'POST',
    path: '/v1/backups?x=1',
    headers: { authorization: 'Bearer abc', 'idempotency-key': 'k1', cookie: 'secret=1', host: 'lifeboat.svc', 'content-length': '99' },
    body: { deep: true },
    from: 'cp-1',
    clientIp: '10.9.9.9',
    trust,
    timeoutMs: 5000,
    ...more,
  });

test("a forwarded request: the caller's token and key, marked as forwarded; the leader's status, body and headers come back", async () => {
  const trust = peerTrust(tlsOf(pki.server.cert, pki.ca.cert))!;
  let seen: { method?: string; url?: string; headers?: Record<string, unknown>; body?: string } = {};
  behave = (req, body, res) => {
    seen = { method: req.method, url: req.url, headers: req.headers, body };
    res.writeHead(202, { 'content-type': 'application/json; charset=utf-8', location: '/v1/jobs/job-1', [NODE_HEADER]: 'cp-2', 'set-cookie': 'a=b', 'x-other': '1' });
    res.end('{"job":{"id":"job-1"}}');
  };
  const answer = await request(trust);
  assert.equal(seen.method, 'POST');
  assert.equal(seen.url, '/v1/backups?x=1');
  assert.equal(seen.headers?.authorization, 'Bearer abc');
  assert.equal(seen.headers?.['idempotency-key'], 'k1');
  assert.equal(seen.headers?.[FORWARDED_BY], 'cp-1');
  assert.equal(seen.headers?.['x-forwarded-for'], '10.9.9.9');
  assert.equal(seen.headers?.cookie, undefined);
  assert.notEqual(seen.headers?.host, 'lifeboat.svc');
  assert.equal(seen.body, '{"deep":true}');
  assert.equal(seen.headers?.['content-type'], 'application/json');
  assert.equal(answer.status, 202);
  assert.equal(answer.body.toString(), '{"job":{"id":"job-1"}}');
  assert.deepEqual(answer.headers, { 'content-type': 'application/json; charset=utf-8', location: '/v1/jobs/job-1', [NODE_HEADER]: 'cp-2' });

  // An error answer is the leader's too; a leader that does not name itself is named for it.
  behave = (_req, _body, res) => {
    res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="lifeboat"' });
    res.end('{"code":"UNAUTHENTICATED"}');
  };
  const refused = await request(trust, { body: undefined, method: 'GET', path: '/v1/jobs/job-1' });
  assert.equal(refused.status, 401);
  assert.equal(refused.headers['www-authenticate'], 'Bearer realm="lifeboat"');
  assert.equal(refused.headers[NODE_HEADER], 'cp-2');
});

test('the CA chain of our own certificate is trusted as the anchor', async () => {
  const chained = path.join(work, 'chain2.crt');
  await writeFile(chained, `${await readFile(pki.server.cert, 'utf8')}${await readFile(pki.ca.cert, 'utf8')}`);
  behave = (_req, _body, res) => res.end('{}');
  assert.equal((await request(peerTrust(tlsOf(chained))!)).status, 200);
});

test('no answer is a 502 DAEMON_UNREACHABLE naming the leader: an untrusted certificate, a timeout, an answer too large, nobody listening', async () => {
  const trust = peerTrust(tlsOf(pki.server.cert, pki.ca.cert))!;
  const unreachable = (pattern: RegExp) => (err: unknown) => {
    assert.ok(err instanceof DaemonUnreachableError, String(err));
    assert.match(err.message, /to the leader cp-2 at https:\/\/127\.0\.0\.1:\d+/);
    assert.match(err.message, pattern);
    return true;
  };
  behave = (_req, _body, res) => res.end('{}');
  await assert.rejects(request({ ca: [await readFile(pki.otherCa.cert, 'utf8')], partialChain: false, source: 'other' }), unreachable(/certificate/));
  behave = () => undefined; // never answers
  await assert.rejects(request(trust, { timeoutMs: 300 }), unreachable(/no answer within 0\.3 s \(api\.forwardTimeoutSeconds\)/));
  behave = (_req, _body, res) => res.end(Buffer.alloc(2048, 'x'));
  await assert.rejects(request(trust, { maxResponseBytes: 1024 }), unreachable(/larger than 1024 bytes/));
  await assert.rejects(request(trust, { url: 'https://127.0.0.1:1' }), (err: unknown) => err instanceof DaemonUnreachableError && /ECONNREFUSED/.test(err.message));
});
