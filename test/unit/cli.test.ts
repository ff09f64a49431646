import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
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
