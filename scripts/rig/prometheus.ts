import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { freePorts } from './ports.ts';
import { spawnLogged, stopChild, waitUntilReady } from './process.ts';

/**
 * A real Prometheus (Debian's /usr/bin/prometheus) on 127.0.0.1, for tests: its own data dir
 * and a generated config that scrapes the given targets every second and loads the given rule
 * files, evaluated every second, sending alerts to the given Alertmanagers. Starts in about a
 * second.
 */
export interface PrometheusRig {
  /** http://127.0.0.1:<port> */
  url: string;
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
  ruleFiles?: string[];
  /** host:port of each Alertmanager to send alerts to (none: alerts are only evaluated). */
  alertmanagers?: string[];
}

export async function startPrometheus(options: PrometheusOptions): Promise<PrometheusRig> {
  const dir = path.resolve(options.dir);
  await mkdir(path.join(dir, 'data'), { recursive: true });
  const [port] = await freePorts(1);
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: (options.ruleFiles ?? []).map((f) => path.resolve(f)),
    // The rules' absent(up{job=~".*lifeboat.*"}) expects lifeboat in the job's name.
    scrape_configs: [{ job_name: 'lifeboat', static_configs: [{ targets: options.targets }] }],
    ...(options.alertmanagers?.length ? { alerting: { alertmanagers: [{ static_configs: [{ targets: options.alertmanagers }] }] } } : {}),
  };
  const configFile = path.join(dir, 'prometheus.yml');
  await writeFile(configFile, stringify(config));
  const logFile = path.join(dir, 'prometheus.log');
  const child = spawnLogged(
    '/usr/bin/prometheus',
    [`--config.file=${configFile}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    logFile,
  );
  const url = `http://127.0.0.1:${port}`;

  await waitUntilReady('prometheus', child, `${url}/-/ready`, logFile);

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
    stop: () => stopChild(child, 10_000),
  };
}
