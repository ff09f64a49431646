import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { killOnExit } from '../../scripts/rig/process.ts';
import { NODE_FLAGS, REPO } from './lifeboat.ts';

const run = promisify(execFile);

/** A `lifeboat serve` child process, with its JSON log lines as they arrive. */
export interface DaemonProcess {
  name: string;
  child: ChildProcess;
  logs: Record<string, unknown>[];
  ports: { api: number; metrics: number };
  /** Resolves with the exit code (or the signal) once the process is gone. */
  exited: Promise<number | NodeJS.Signals>;
}

/** Starts `lifeboat serve --config FILE` from source and waits until it says it is serving. */
export async function spawnDaemon(name: string, configFile: string, env: NodeJS.ProcessEnv = {}, wrap: readonly string[] = []): Promise<DaemonProcess> {
  // `wrap` runs it through another command that execs it (a lab host's nsenter), so the PID stays its own.
  const argv = [...wrap, process.execPath, ...NODE_FLAGS, path.join(REPO, 'src/cli/main.ts'), '--config', configFile, 'serve'];
  const child = killOnExit(
    spawn(argv[0]!, argv.slice(1), {
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    }),
  );
  const exited = new Promise<number | NodeJS.Signals>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const logs: Record<string, unknown>[] = [];
  let partial = '';
  let text = '';
  const serving = new Promise<{ api: number; metrics: number }>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        text += `${line}\n`;
        if (!line.startsWith('{')) continue;
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.phase === 'serving') resolve({ api: entry.apiPort as number, metrics: entry.metricsPort as number });
      }
    });
    void exited.then((code) => reject(new Error(`daemon ${name} exited (${code}) before serving:\n${text}${partial}`)));
  });
  const ports = await serving;
  return { name, child, logs, ports, exited };
}

/** GET http://127.0.0.1:PORT/metrics and parse the plain samples into `name{labels}` → value. */
export function scrape(port: number): Promise<Map<string, number>> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/metrics', timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => {
        const samples = new Map<string, number>();
        for (const line of body.split('\n')) {
          if (line === '' || line.startsWith('#')) continue;
          const at = line.lastIndexOf(' ');
          samples.set(line.slice(0, at), Number(line.slice(at + 1)));
        }
        resolve(samples);
      });
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('scrape timed out')));
    req.end();
  });
}

/** The value of the first sample whose name (and labels) start with `prefix`. */
export function sample(samples: Map<string, number>, prefix: string): number | undefined {
  for (const [key, value] of samples) if (key.startsWith(prefix)) return value;
  return undefined;
}

export interface CurlResult {
  status: number;
  body: string;
  json: Record<string, unknown> | undefined;
}

/** The real curl binary, as an operator at 3 a.m. would use it. */
export async function curl(args: string[]): Promise<CurlResult> {
  const { stdout } = await run('curl', ['-sS', '--max-time', '20', '-w', '\n%{http_code}', ...args]);
  const at = stdout.lastIndexOf('\n');
  const body = stdout.slice(0, at);
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(body) as Record<string, unknown>;
  } catch {
    json = undefined;
  }
  return { status: Number(stdout.slice(at + 1)), body, json };
}

/** Polls `check` every 100 ms until it holds; throws after `ms`. Resolves with the time it took. */
export async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return Date.now() - started;
}
