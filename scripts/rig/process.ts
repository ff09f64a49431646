import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';

/** The rigs' servers, SIGKILLed by PID if this process exits without stopping them. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** SIGKILLs `child` (by its PID) if this process exits while it still runs. */
export function killOnExit<T extends ChildProcess>(child: T): T {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/**
 * Starts a server with its stdout and stderr appended to `logFile`. It is killed when this
 * process exits, unless `detached` (to outlive it, as the rig CLI's etcd does).
 */
export function spawnLogged(command: string, args: readonly string[], logFile: string, options: { env?: NodeJS.ProcessEnv; detached?: boolean } = {}): ChildProcess {
  const log = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio: ['ignore', log, log], env: options.env ?? process.env, detached: options.detached ?? false });
  } finally {
    closeSync(log); // the child holds its own copy
  }
  if (options.detached) child.unref();
  else killOnExit(child);
  return child;
}

export function hasExited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM to `child`, SIGKILL after `graceMs`; resolves once it has exited (at once if it had). */
export function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    if (hasExited(child)) return resolve();
    const force = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(force);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** The last `lines` lines of a log file, for an error message ('' if it cannot be read). */
export function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Polls `url` (a readiness endpoint such as /-/ready) every 100 ms until it answers 2xx. If
 * `child` exits first, or 30 s pass (then it is killed), throws with the last lines of its log.
 */
export async function waitUntilReady(name: string, child: ChildProcess, url: string, logFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (hasExited(child)) throw new Error(`${name} exited ${child.exitCode ?? child.signalCode}:\n${tail(logFile, 10)}`);
    if (await fetch(url).then((r) => r.ok, () => false)) return;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${name} not ready within 30 s:\n${tail(logFile, 10)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
