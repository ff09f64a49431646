import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import type { Teardown } from './teardown.ts';

export const MiB = 1024 * 1024;

/** GNU time: its rusage-based peak RSS does not miss a peak the way polling /proc can. */
const TIME = '/usr/bin/time';
/** USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux architecture Node runs on. */
const CLOCK_TICKS = 100;
/** Output kept per stream (the tail). */
const KEEP = 64 * 1024;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export interface Measured {
  /** Wall clock from spawn to exit, process start included. */
  seconds: number;
  /** Peak resident set size of the command (ru_maxrss). */
  peakRssMiB: number;
  /** User plus system CPU time of the command. */
  cpuSeconds: number;
  /** The tails of its output. */
  stdout: string;
  stderr: string;
  /** With `threads`: CPU seconds by thread name (e.g. MainThread, libuv-worker, V8Worker). */
  threadCpu?: Record<string, number>;
}

export interface TimedOptions {
  env?: NodeJS.ProcessEnv;
  /** Ends the command if the benchmark is interrupted. */
  teardown: Teardown;
  /** A directory for GNU time's report (removed again). */
  scratch: string;
  /** Sample the command's threads' CPU time every 100 ms (the last 100 ms are not seen). */
  threads?: boolean;
}

/**
 * Runs one command as a user would (its own process, started and waited for), timing it and
 * taking its peak RSS and CPU time from GNU time. The command runs in its own process group,
 * so an interrupted benchmark ends it (and anything it started) by that group's id.
 */
export async function timed(command: string, argv: readonly string[], options: TimedOptions): Promise<Measured> {
  if (!existsSync(TIME)) throw new Error(`${TIME} is missing: install GNU time (apt-get install time)`);
  const report = path.join(options.scratch, `time-${randomBytes(4).toString('hex')}.txt`);
  try {
    return await new Promise<Measured>((resolve, reject) => {
      const started = performance.now();
      const child = spawn(TIME, ['-f', '%M %U %S', '-o', report, command, ...argv], {
        env: { ...process.env, ...options.env },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      options.teardown.track(child);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout = (stdout + d.toString()).slice(-KEEP)));
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-KEEP)));
      const threads = new Map<string, { name: string; seconds: number }>();
      const poll = options.threads ? setInterval(() => sampleThreads(child.pid!, threads), 100) : undefined;
      child.on('error', reject);
      child.on('close', (code, signal) => {
        clearInterval(poll);
        const seconds = (performance.now() - started) / 1000;
        if (code !== 0) {
          reject(new Error(`${path.basename(command)} ${code === null ? `was killed by ${signal}` : `exited ${code}`}: ${stderr.slice(-2000)}`));
          return;
        }
        readFile(report, 'utf8').then((text) => {
          const fields = text.trim().split('\n').at(-1)!.split(' ').map(Number);
          const [maxRssKiB, user, system] = fields;
          if (fields.length !== 3 || fields.some((n) => !Number.isFinite(n))) throw new Error(`cannot read ${TIME}'s report: ${text}`);
          const measured: Measured = { seconds, peakRssMiB: maxRssKiB! / 1024, cpuSeconds: user! + system!, stdout, stderr };
          if (options.threads) {
            measured.threadCpu = {};
            for (const { name, seconds: cpu } of threads.values()) measured.threadCpu[name] = (measured.threadCpu[name] ?? 0) + cpu;
          }
          resolve(measured);
        }).catch(reject);
      });
    });
  } finally {
    await rm(report, { force: true });
  }
}

/** The name and CPU seconds (user + system) in a /proc stat line. */
function parseStat(stat: string): { name: string; seconds: number } {
  // Fields after the name, which is in parentheses and may hold spaces: state is field 3.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), seconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS };
}

/** CPU seconds (user + system, all threads) a running process has used so far. */
export function cpuSeconds(pid: number): number {
  return parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).seconds;
}

/** The latest CPU time of each thread of the command GNU time (`timePid`) runs. */
function sampleThreads(timePid: number, threads: Map<string, { name: string; seconds: number }>): void {
  try {
    const pid = readFileSync(`/proc/${timePid}/task/${timePid}/children`, 'utf8').trim().split(' ')[0];
    if (!pid) return;
    for (const tid of readdirSync(`/proc/${pid}/task`)) threads.set(tid, parseStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')));
  } catch {
    // starting or exiting
  }
}

/** CPU seconds the whole machine has been busy (every CPU, every process, steal included). */
function machineCpuSeconds(): number {
  const total = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = total;
  return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS;
}

/**
 * CPU seconds each named process used while `work` ran, and under `machine` what the whole
 * machine used (so what other processes took shows as the difference).
 */
export async function cpuDuring<T>(pids: Readonly<Record<string, number>>, work: () => Promise<T>): Promise<{ result: T; cpu: Record<string, number> }> {
  const sample = () => ({ ...Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuSeconds(pid)])), machine: machineCpuSeconds() });
  const before = sample();
  const result = await work();
  const after = sample();
  const cpu = Object.fromEntries(Object.entries(after).map(([name, seconds]) => [name, seconds - before[name as keyof typeof before]!]));
  return { result, cpu };
}
