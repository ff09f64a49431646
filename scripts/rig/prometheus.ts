import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePorts } from './ports.ts';

/**
 * A real Prometheus (Debian's /usr/bin/prometheus) on 127.0.0.1, for tests: its own data dir
 * and a generated config that scrapes the given targets every second and loads the given rule
 * files, evaluated every second. Starts in about a second.
 */
export interface PrometheusRig {
  /** http://127.0.0.1:<port> */
  url: string;
  pid: number;
  dir: string;
  /** An instant query through the HTTP API; throws on an error answer. */
  query(promql: string): Promise<PromSample[]>;
  /** Polls `query` until `accept` says yes (or the deadline passes, then throws with the last result). */
  waitFor(promql: string, accept: (samples: PromSample[]) => boolean, timeoutMs?: number): Promise<PromSample[]>;
  /** GET /api/v1/<path>, the `data` of the answer. */
  api(pathAndQuery: string): Promise<unknown>;
  stop(): Promise<void>;
}

export interface PromSample {
  metric: Record<string, string>;
  value: number;
}

export interface PrometheusOptions {
  dir: string;
  /** host:port of each /metrics endpoint to scrape. */
  targets: string[];
  /** The scrape job's name; the rules' absent(up{job=~".*lifeboat.*"}) expects lifeboat in it. */
  job?: string;
  ruleFiles?: string[];
  binary?: string;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

export async function startPrometheus(options: PrometheusOptions): Promise<PrometheusRig> {
  const dir = path.resolve(options.dir);
  await mkdir(path.join(dir, 'data'), { recursive: true });
  const [port] = await freePorts(1);
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: (options.ruleFiles ?? []).map((f) => path.resolve(f)),
    scrape_configs: [{ job_name: options.job ?? 'lifeboat', static_configs: [{ targets: options.targets }] }],
  };
  const configFile = path.join(dir, 'prometheus.yml');
  await writeFile(configFile, stringify(config));
  const logFile = path.join(dir, 'prometheus.log');
  const log = openSync(logFile, 'a');
  const child = spawn(
    options.binary ?? '/usr/bin/prometheus',
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', log, log] },
  );
  closeSync(log);
  children.add(child);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void exited.then(() => children.delete(child));
  const url = `http://127.0.0.1:${port}`;

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`prometheus exited ${child.exitCode ?? child.signalCode}:\n${tail(logFile)}`);
    const ready = await fetch(`${url}/-/ready`).then((r) => r.ok, () => false);
    if (ready) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`prometheus not ready within 30 s:\n${tail(logFile)}`);
    }
    await sleep(100);
  }

  const api = async (pathAndQuery: string): Promise<unknown> => {
    const res = await fetch(`${url}/api/v1/${pathAndQuery}`);
    const body = (await res.json()) as { status: string; data?: unknown; error?: string };
    if (body.status !== 'success') throw new Error(`prometheus /api/v1/${pathAndQuery}: ${body.error ?? res.status}`);
    return body.data;
  };
  const query = async (promql: string): Promise<PromSample[]> => {
    const data = (await api(`query?query=${encodeURIComponent(promql)}`)) as { resultType: string; result: { metric: Record<string, string>; value: [number, string] }[] };
    if (data.resultType !== 'vector') throw new Error(`expected an instant vector from ${promql}, got ${data.resultType}`);
    return data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  };
  return {
    url,
    pid: child.pid!,
    dir,
    api,
    query,
    async waitFor(promql, accept, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const samples = await query(promql);
        if (accept(samples)) return samples;
        if (Date.now() > until) throw new Error(`${promql}: not as expected within ${timeoutMs} ms; last: ${JSON.stringify(samples)}`);
        await sleep(250);
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const force = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.kill('SIGTERM');
      await exited;
      clearTimeout(force);
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-10).join('\n');
  } catch {
    return '';
  }
}
