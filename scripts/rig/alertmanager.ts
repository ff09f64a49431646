import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { freePorts } from './ports.ts';
import { spawnLogged, stopChild, waitUntilReady } from './process.ts';

/** Debian's prometheus-alertmanager package installs the server under this name. */
export const ALERTMANAGER = '/usr/bin/prometheus-alertmanager';
export const AMTOOL = '/usr/bin/amtool';

/**
 * A real Alertmanager (Debian's prometheus-alertmanager) on 127.0.0.1, for tests: a free port,
 * its own data dir, clustering off (no gossip port), and the given alertmanager.yml. Starts in
 * about a second.
 */
export interface AlertmanagerRig {
  /** http://127.0.0.1:<port>; Prometheus sends to 127.0.0.1:<port>. */
  url: string;
  /** host:port, as a Prometheus alerting target. */
  target: string;
  /** GET /api/v2/alerts: the alerts it holds now. */
  alerts(): Promise<AlertmanagerAlert[]>;
  stop(): Promise<void>;
}

export interface AlertmanagerAlert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  startsAt: string;
  endsAt: string;
  status: { state: string };
  receivers: { name: string }[];
}

export interface AlertmanagerOptions {
  dir: string;
  /** The configuration: a parsed alertmanager.yml (written to `<dir>/alertmanager.yml`) or its text. */
  config: Record<string, unknown> | string;
}

export async function startAlertmanager(options: AlertmanagerOptions): Promise<AlertmanagerRig> {
  const dir = path.resolve(options.dir);
  await mkdir(path.join(dir, 'data'), { recursive: true });
  const [port] = await freePorts(1);
  const configFile = path.join(dir, 'alertmanager.yml');
  await writeFile(configFile, typeof options.config === 'string' ? options.config : stringify(options.config));
  const logFile = path.join(dir, 'alertmanager.log');
  const url = `http://127.0.0.1:${port}`;
  const child = spawnLogged(
    ALERTMANAGER,
    [
      `--config.file=${configFile}`,
      `--storage.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      `--web.external-url=${url}`,
      // One instance: no gossip listener on 0.0.0.0:9094.
      '--cluster.listen-address=',
      '--log.level=warn',
    ],
    logFile,
  );

  await waitUntilReady('alertmanager', child, `${url}/-/ready`, logFile);

  return {
    url,
    target: `127.0.0.1:${port}`,
    async alerts() {
      const res = await fetch(`${url}/api/v2/alerts`);
      if (!res.ok) throw new Error(`alertmanager /api/v2/alerts: ${res.status} ${await res.text()}`);
      return (await res.json()) as AlertmanagerAlert[];
    },
    stop: () => stopChild(child, 10_000),
  };
}
