import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { clientOptions, errorFromResponse, jobError } from '../../src/api/client.ts';
import { errorResponse } from '../../src/api/errors.ts';
import { parseTokens, hashToken } from '../../src/api/tokens.ts';
import { loadClientConfig, resolveConfig } from '../../src/config/load.ts';
import { BadRequestError, ConfigError, InternalError, LifeboatError, MethodNotAllowedError, NotLeaderError, RateLimitedError, UnauthenticatedError } from '../../src/errors/errors.ts';
import type { Job } from '../../src/jobs/job.ts';
import { Command, CommanderError } from 'commander';
import { registerClientCommands } from '../../src/cli/client-commands.ts';
import { registerTokenCommand } from '../../src/cli/token-command.ts';
import { errorLines, runCli } from '../support/lifeboat.ts';

const dir = mkdtempSync(path.join(tmpdir(), 'lifeboat-api-client-'));
after(() => rmSync(dir, { recursive: true, force: true }));

test('the client section: defaults, the config file, LIFEBOAT_CLIENT__* overrides, and errors naming the field', async () => {
  assert.deepEqual({ ...loadClientConfig({ env: {} }) }, { url: 'https://127.0.0.1:8443' });
  const file = path.join(dir, 'client.yaml');
  // The client reads only its section: a daemon section it could not resolve does not matter.
  await writeFile(file, 'client:\n  url: https://cp-1:8443\n  caFile: /etc/lifeboat/ca.crt\nstore:\n  s3:\n    bucket: b\n    secretAccessKeyFile: /root/unreadable\n');
  const fromFile = loadClientConfig({ file, env: { LIFEBOAT_CLIENT__TOKEN_FILE: '/root/token', LIFEBOAT_CLIENT__URL: 'https://cp-2:9443' } });
  assert.deepEqual({ ...fromFile }, { url: 'https://cp-2:9443', caFile: '/etc/lifeboat/ca.crt', tokenFile: '/root/token' });
  assert.ok(Object.isFrozen(fromFile));
  // The whole config accepts (and keeps) the section too.
  assert.equal(resolveConfig({ client: { url: 'https://x:1' } }).client.url, 'https://x:1');

  const bad: [NodeJS.ProcessEnv, string, RegExp][] = [
    [{ LIFEBOAT_CLIENT__URL: 'http://127.0.0.1:8443' }, '/client/url', /must match|https/],
    [{ LIFEBOAT_CLIENT__CERT_FILE: '/a.crt' }, '/client/keyFile', /both certFile and keyFile/],
    [{ LIFEBOAT_CLIENT__TOKEN: 't', LIFEBOAT_CLIENT__TOKEN_FILE: '/t' }, '/client/token', /not both/],
    [{ LIFEBOAT_CLIENT__PASSWORD: 'x' }, 'LIFEBOAT_CLIENT__PASSWORD', /not a setting/],
  ];
  for (const [env, field, message] of bad) {
    assert.throws(() => loadClientConfig({ env }), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.field, field);
      assert.match(err.message, message);
      return true;
    });
  }
});

test('client options read the token and certificate files, naming the field when one cannot be read', async () => {
  const tokenFile = path.join(dir, 'token.txt');
  await writeFile(tokenFile, 'lbt_abc\n');
  assert.equal(clientOptions({ url: 'https://h:1/', tokenFile }).token, 'lbt_abc');
  assert.equal(clientOptions({ url: 'https://h:1/' }).url, 'https://h:1');
  assert.throws(() => clientOptions({ url: 'https://h:1', caFile: path.join(dir, 'none.crt') }), (err: unknown) => err instanceof ConfigError && err.field === '/client/caFile');
  await writeFile(path.join(dir, 'empty'), '\n');
  assert.throws(() => clientOptions({ url: 'https://h:1', tokenFile: path.join(dir, 'empty') }), (err: unknown) => err instanceof ConfigError && /is empty/.test(err.message));
});

test('error responses come back as the typed errors the daemon threw', () => {
  const notLeader = errorFromResponse(409, { code: 'NOT_LEADER', message: 'node-a is not the leader', leader: 'node-b' });
  assert.ok(notLeader instanceof NotLeaderError);
  assert.equal(notLeader.leader, 'node-b');
  assert.match(notLeader.hint ?? '', /node-b/);
  const bad = errorFromResponse(400, { code: 'BAD_REQUEST', message: '/body/deep must be boolean', field: '/body/deep' });
  assert.ok(bad instanceof BadRequestError && bad.field === '/body/deep');
  const limited = errorFromResponse(429, { code: 'RATE_LIMITED', message: 'slow down' }, '17');
  assert.ok(limited instanceof RateLimitedError && limited.retryAfterSeconds === 17);
  const unauth = errorFromResponse(401, { code: 'UNAUTHENTICATED', message: 'no credentials' });
  assert.ok(unauth instanceof UnauthenticatedError);
  assert.match(unauth.hint ?? '', /tokenFile/);
  const locked = errorFromResponse(409, { code: 'OBJECT_LOCKED', message: 'locked', hint: 'wait' });
  assert.ok(locked instanceof LifeboatError && locked.code === 'OBJECT_LOCKED' && locked.hint === 'wait');
  const internal = errorFromResponse(500, { code: 'INTERNAL', message: 'internal error; see the daemon log' });
  assert.ok(internal instanceof InternalError);
  assert.match(internal.message, /answered 500: internal error/);
  assert.ok(errorFromResponse(502, undefined) instanceof InternalError);

  const job = { id: 'job-1', kind: 'backup', error: { code: 'ETCD_UNAVAILABLE', message: 'no member answered', hint: 'check etcd' } } as Job;
  const failed = jobError(job);
  assert.equal(failed.code, 'ETCD_UNAVAILABLE');
  assert.equal(failed.message, 'job job-1 (backup) failed: no member answered');
  assert.equal(failed.hint, 'check etcd');
});

test('problem details come back as the typed error the daemon threw; detail is the message, an older body\'s message still works', () => {
  const sent = errorResponse(new NotLeaderError('node-b', 'node-a is not the leader', { leaderUrl: 'https://10.0.0.2:8443' }));
  const notLeader = errorFromResponse(sent.status, JSON.parse(JSON.stringify(sent.body)));
  assert.ok(notLeader instanceof NotLeaderError);
  assert.equal(notLeader.message, 'node-a is not the leader');
  assert.equal(notLeader.leaderUrl, 'https://10.0.0.2:8443');
  const wrongMethod = errorResponse(new MethodNotAllowedError(['GET', 'POST'], 'PUT is not allowed on /v1/backups; it takes GET, POST'));
  const back = errorFromResponse(wrongMethod.status, wrongMethod.body);
  assert.equal(back.code, 'METHOD_NOT_ALLOWED');
  assert.equal(back.message, 'PUT is not allowed on /v1/backups; it takes GET, POST');
  // A problem with detail only (no message), as RFC 9457 servers send it.
  const detailOnly = errorFromResponse(404, { type: 'https://lifeboat.dev/problems/not-found', title: 'Not found', status: 404, detail: 'no backup x', code: 'NOT_FOUND' });
  assert.equal(detailOnly.message, 'no backup x');
  assert.equal(errorFromResponse(404, { code: 'NOT_FOUND', message: 'no backup y' }).message, 'no backup y');
});

test('token create prints a new token once and appends its hash to a 0600 tokens file; names are unique', async () => {
  const file = path.join(dir, 'tokens');
  const first = await runCli(['token', 'create', '--role', 'operator', '--name', 'ci', '--tokens-file', file]);
  assert.equal(first.code, 0, first.stderr);
  const token = first.stdout.trim();
  assert.match(token, /^lbt_[A-Za-z0-9_-]{43}$/);
  assert.equal(first.stdout, `${token}\n`, 'stdout is the token alone');
  assert.match(first.stderr, /shown only now/);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const text = await readFile(file, 'utf8');
  assert.ok(!text.includes(token), 'only the hash is stored');

  const config = path.join(dir, 'config.yaml');
  await writeFile(config, `api:\n  tokensFile: ${file}\n`);
  const second = await runCli(['--config', config, 'token', 'create', '--role', 'viewer', '--name', 'grafana']);
  assert.equal(second.code, 0, second.stderr);
  const entries = parseTokens(await readFile(file, 'utf8'), file);
  assert.deepEqual(entries.map((e) => [e.name, e.role]), [['ci', 'operator'], ['grafana', 'viewer']]);
  assert.deepEqual(entries[0]?.hash, hashToken(token));
  assert.deepEqual(entries[1]?.hash, hashToken(second.stdout.trim()));

  const before = await readFile(file, 'utf8');
  const duplicate = await runCli(['token', 'create', '--role', 'viewer', '--name', 'ci', '--tokens-file', file]);
  assert.equal(duplicate.code, 1);
  assert.match(duplicate.stderr, /already has a token named ci/);
  assert.equal(duplicate.stdout, '');
  const badName = await runCli(['token', 'create', '--role', 'viewer', '--name', 'two words', '--tokens-file', file]);
  assert.equal(badName.code, 2);
  await writeFile(path.join(dir, 'empty.yaml'), '');
  const noFile = await runCli(['token', 'create', '--role', 'viewer', '--name', 'x'], { LIFEBOAT_CONFIG: path.join(dir, 'empty.yaml') });
  assert.equal(noFile.code, 2);
  assert.match(noFile.stderr, /pass --tokens-file or set api.tokensFile/);
  assert.equal(await readFile(file, 'utf8'), before, 'failed attempts change nothing');
});

test('--help of status, trigger, jobs and token create teaches with examples', async () => {
  const helpOf = async (args: string[]): Promise<string> => {
    let out = '';
    const program = new Command('lifeboat').exitOverride().configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
    registerClientCommands(program);
    registerTokenCommand(program);
    await assert.rejects(program.parseAsync([...args, '--help'], { from: 'user' }), (err: unknown) => err instanceof CommanderError && err.exitCode === 0);
    return out;
  };
  for (const command of [['status'], ['trigger'], ['trigger', 'backup'], ['trigger', 'verify'], ['jobs'], ['token', 'create']]) {
    const help = await helpOf(command);
    assert.match(help, new RegExp(`Usage: lifeboat ${command.join(' ')}`));
    assert.match(help, /Examples?:/, command.join(' '));
  }
  assert.match(await helpOf(['status']), /LIFEBOAT_CLIENT__URL/);
  // And the real CLI has them.
  const real = await runCli(['--help']);
  for (const command of ['status', 'trigger', 'jobs', 'token']) assert.match(real.stdout, new RegExp(`^  ${command} `, 'm'));
});

test('a daemon that is not there: one line naming the address and what to check, exit 1', async () => {
  // Port 1 on loopback is closed.
  await writeFile(path.join(dir, 'empty.yaml'), '');
  const result = await runCli(['status'], { LIFEBOAT_CLIENT__URL: 'https://127.0.0.1:1', LIFEBOAT_CONFIG: path.join(dir, 'empty.yaml') });
  assert.equal(result.code, 1);
  const lines = errorLines(result.stderr);
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0] ?? '', /cannot reach the daemon at https:\/\/127\.0\.0\.1:1: .*ECONNREFUSED.*\(is the daemon running\?/);
});
