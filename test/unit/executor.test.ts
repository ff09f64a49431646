import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { access, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CancelledError, ToolError } from '../../src/errors/errors.ts';
import { processExecutor } from '../../src/exec/executor.ts';
import { acceptsConnections, freePorts } from '../../src/exec/ports.ts';

const work = await mkdtemp(path.join(tmpdir(), 'lifeboat-exec-unit-'));
test.after(() => rm(work, { recursive: true, force: true }));
const EXECUTOR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/exec/executor.ts');

/** Whether `pid` is a running process (a zombie, killed but not yet reaped, is not). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ESRCH');
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function until(what: () => Promise<boolean>): Promise<void> {
  while (!(await what())) await sleep(20);
}

const exists = (file: string) => access(file).then(() => true, () => false);

test('start() runs a child; stop() sends SIGTERM, which ends a well-behaved child', async () => {
  const child = await processExecutor.start('sleep', ['30']);
  assert.ok(child.pid > 0);
  assert.ok(alive(child.pid));
  await child.stop(30_000);
  assert.deepEqual(await child.exited, { code: null, signal: 'SIGTERM' });
  assert.equal(alive(child.pid), false);
  await child.stop(30_000); // a second stop is harmless
});

test('stop() escalates to SIGKILL after the grace when the child ignores SIGTERM', async () => {
  const ready = path.join(work, 'ignoring-term');
  // `exec` keeps the PID: the child itself ignores SIGTERM, and nothing else is left behind.
  const child = await processExecutor.start('sh', ['-c', 'trap "" TERM; touch "$1"; exec sleep 30', 'sh', ready]);
  await until(() => exists(ready));
  await child.stop(200);
  assert.deepEqual(await child.exited, { code: null, signal: 'SIGKILL' });
  assert.equal(alive(child.pid), false);
});

test('exited settles with the exit code when the child ends by itself', async () => {
  const child = await processExecutor.start('sh', ['-c', 'exit 3']);
  assert.deepEqual(await child.exited, { code: 3, signal: null });
  await child.stop(1000); // already gone: returns at once
});

test('output goes to a 0600 file; a missing command is a ToolError', async () => {
  const out = path.join(work, 'out.log');
  const child = await processExecutor.start('sh', ['-c', 'echo to-stdout; echo to-stderr >&2']);
  await child.exited;
  const logged = await processExecutor.start('sh', ['-c', 'echo to-stdout; echo to-stderr >&2'], { output: out });
  await logged.exited;
  assert.deepEqual((await readFile(out, 'utf8')).split('\n').filter(Boolean).sort(), ['to-stderr', 'to-stdout']);
  assert.equal((await stat(out)).mode & 0o777, 0o600);
  await assert.rejects(processExecutor.start(path.join(work, 'no-such-binary'), []), (err: unknown) => err instanceof ToolError && /not found/.test(err.message));
});

// The timeout only stops a hang if the child were left running; nothing here is timed.
test('a started child does not outlive this process when it exits', { timeout: 120_000 }, async () => {
  // Another Node process starts `sleep`, prints its PID, then exits without stopping it.
  const script = `
    const { processExecutor } = await import(${JSON.stringify(EXECUTOR)});
    const child = await processExecutor.start('sleep', ['600']);
    process.stdout.write(String(child.pid));
    process.exit(0);
  `;
  const parent = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  parent.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const code = await new Promise<number | null>((resolve) => parent.once('exit', resolve));
  assert.equal(code, 0);
  const pid = Number(stdout);
  assert.ok(pid > 0, stdout);
  try {
    // The kill is sent before the parent exits; the orphan is reaped by init shortly after.
    await until(async () => !alive(pid));
  } finally {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
});

test('run() with an aborted signal kills the tool and rejects with CancelledError', async () => {
  const abort = new AbortController();
  const running = processExecutor.run('sleep', ['30'], { signal: abort.signal });
  abort.abort();
  await assert.rejects(running, CancelledError);
});

test('freePorts gives distinct ports that nothing listens on', async () => {
  const ports = await freePorts(3);
  assert.equal(new Set(ports).size, 3);
  for (const p of ports) assert.equal(await acceptsConnections('127.0.0.1', p), false);
});
