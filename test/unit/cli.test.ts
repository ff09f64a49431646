import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadSigning } from '../../src/signing/trust.ts';
import { errorLines, runCli } from '../support/lifeboat.ts';

test('--help on every command explains it and shows an example', async () => {
  const top = await runCli(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /Examples:/);
  for (const command of ['backup', 'list', 'show', 'verify', 'extract', 'cleanup', 'keygen']) {
    const help = await runCli([command, '--help']);
    assert.equal(help.code, 0, command);
    assert.match(help.stdout, new RegExp(`Usage: lifeboat ${command}`), command);
    assert.match(help.stdout, /Example/, command);
  }
});

test('usage errors exit 2 with one line', async () => {
  const result = await runCli(['verify']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /missing required argument 'id'/);
  const unknown = await runCli(['frobnicate']);
  assert.equal(unknown.code, 2);
  assert.equal(errorLines(unknown.stderr).filter((l) => l.startsWith('error')).length, 1);
});

test('keygen writes a 0600 identity that age reads, prints its recipient, and never overwrites', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-keygen-'));
  try {
    const file = path.join(dir, 'key.txt');
    const made = await runCli(['keygen', '--output', file]);
    assert.equal(made.code, 0, made.stderr);
    const recipient = made.stdout.trim();
    assert.match(recipient, /^age1[a-z0-9]+$/);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const sealed = execFileSync('age', ['-r', recipient], { input: 'hello' });
    assert.equal(execFileSync('age', ['-d', '-i', file], { input: sealed }).toString(), 'hello');
    const before = await readFile(file);
    const again = await runCli(['keygen', '--output', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
    assert.deepEqual(await readFile(file), before);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('keygen --signing writes a 0600 Ed25519 key and its .pub; stock OpenSSL signs with the one and checks with the other; it never overwrites', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-keygen-signing-'));
  try {
    const file = path.join(dir, 'signing.key');
    const made = await runCli(['keygen', '--signing', '--output', file]);
    assert.equal(made.code, 0, made.stderr);
    assert.match(made.stdout, /^-----BEGIN PUBLIC KEY-----\n/);
    assert.match(made.stderr, /key id [0-9a-f]{16}/);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    assert.equal((await stat(`${file}.pub`)).mode & 0o777, 0o644);
    assert.equal(await readFile(`${file}.pub`, 'utf8'), made.stdout);
    const message = path.join(dir, 'manifest.json');
    await writeFile(message, '{"backupId":"x"}\n');
    execFileSync('openssl', ['pkeyutl', '-sign', '-inkey', file, '-rawin', '-in', message, '-out', `${message}.sig`]);
    const checked = execFileSync('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', `${file}.pub`, '-rawin', '-in', message, '-sigfile', `${message}.sig`]).toString();
    assert.match(checked, /Signature Verified Successfully/);
    // Lifeboat's own check agrees with OpenSSL's signature.
    const { trust } = loadSigning({ publicKeyFiles: [`${file}.pub`], allowUnsigned: false });
    assert.equal(trust.check('m', await readFile(message), await readFile(`${message}.sig`)).signed, true);
    const again = await runCli(['keygen', '--signing', '--output', file]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /already exists/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lifeboat version prints the CLI and Node versions; --json too', async () => {
  const pkg = JSON.parse(await readFile(path.join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
  const text = await runCli(['version']);
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stdout, `client: lifeboat ${pkg.version} (Node.js ${process.version})\n`);
  const json = await runCli(['version', '--json']);
  assert.deepEqual(JSON.parse(json.stdout), { client: { version: pkg.version, node: process.version } });
  const unreachable = await runCli(['version', '--server'], { LIFEBOAT_CLIENT__URL: 'https://127.0.0.1:1' });
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /127\.0\.0\.1:1/);
});

test('lifeboat completion bash completes commands, nested commands and their options in a real bash', async () => {
  const script = (await runCli(['completion', 'bash'])).stdout;
  const complete = (line: string) => {
    const words = line.split(' ');
    const program = [
      script,
      `COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}`,
      '_lifeboat; printf "%s\\n" "${COMPREPLY[@]}"',
    ].join('\n');
    return execFileSync('bash', ['-c', program]).toString().trim().split('\n').filter(Boolean).sort();
  };
  assert.deepEqual(complete('lifeboat ba'), ['backup']);
  assert.deepEqual(complete('lifeboat prune --d'), ['--dry-run']);
  assert.deepEqual(complete('lifeboat --config x.yaml restore p'), ['plan']);
  assert.ok(complete('lifeboat restore plan --').includes('--backup'));
  assert.deepEqual(complete('lifeboat keygen --s'), ['--signing']);
  const fish = (await runCli(['completion', 'fish'])).stdout;
  assert.match(fish, /^complete -c lifeboat -n '__fish_seen_subcommand_from prune' -l dry-run$/m);
  const zsh = (await runCli(['completion', 'zsh'])).stdout;
  assert.match(zsh, /^#compdef lifeboat$/m);
  execFileSync('bash', ['-n', '-c', script]);
  const bad = await runCli(['completion', 'tcsh']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Allowed choices are bash, zsh, fish/);
});

test('lifeboat list on a store directory that does not exist is a config error naming it; an empty one lists no backups', async () => {
  const dir = await mkdtemp(path.join(tmpdir(), 'lifeboat-list-'));
  try {
    const missing = path.join(dir, 'no-such-store');
    const config = path.join(dir, 'config.yaml');
    await writeFile(config, `cluster: c1\nkit: { hostRoot: ${dir} }\nstore: { fs: { dir: ${missing} } }\nlog: { level: error }\n`);
    const refused = await runCli(['--config', config, 'list']);
    assert.equal(refused.code, 2);
    assert.deepEqual(errorLines(refused.stderr), [`lifeboat: error: config /store/fs/dir: ${missing} does not exist, so there is no store there to list (check store.fs.dir (and --config); a first backup creates the directory)`]);
    await mkdir(missing);
    const empty = await runCli(['--config', config, 'list']);
    assert.equal(empty.code, 0, empty.stderr);
    assert.equal(empty.stdout, `no backups of cluster c1 in fs:${missing}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
