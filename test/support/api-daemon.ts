import { TEST_SIGNING } from './signing.ts';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ApiDeps } from '../../src/api/deps.ts';
import type { Config } from '../../src/config/schema.ts';
import { daemonApiDeps } from '../../src/daemon/api-deps.ts';
import { createHandlers, handlerDeps } from '../../src/daemon/handlers.ts';
import type { JobKind } from '../../src/jobs/job.ts';
import { DirectoryJobJournal } from '../../src/jobs/journal.ts';
import { JobRunner, type JobHandler } from '../../src/jobs/runner.ts';
import { LifeboatMetrics } from '../../src/metrics/metrics.ts';
import type { Catalog } from '../../src/store/catalog.ts';
import type { BackupStore } from '../../src/store/store.ts';

/**
 * The API's dependencies made of the daemon's own parts (daemonApiDeps, createHandlers, the
 * JobRunner with a journal, the metrics facade), without leader election or schedules: backups
 * are real (etcd → store) and verifications real. `handlers` replaces some kinds, for tests
 * that must not do real work.
 */
export interface ApiParts {
  config: Config;
  log: Logger;
  store: BackupStore;
  catalog: Catalog;
  handlers?: Partial<Record<JobKind, JobHandler>>;
  leadership?: { isLeader(): boolean; leader(): string | undefined };
}

export interface ApiRig {
  deps: ApiDeps;
  runner: JobRunner;
  metrics: LifeboatMetrics;
}

export function apiRig(parts: ApiParts): ApiRig {
  const { config, log, store, catalog } = parts;
  const metrics = new LifeboatMetrics({ cluster: config.cluster, node: config.node, version: '0.0.0-test' });
  const realParts = handlerDeps({ config, store, secondary: undefined, catalog, signing: TEST_SIGNING, metrics, now: () => new Date(), log });
  const real = createHandlers(realParts);
  const runner = new JobRunner({ handlers: { ...real, ...parts.handlers }, journal: new DirectoryJobJournal(path.join(config.daemon.stateDir), log), log, history: config.daemon.jobHistory });
  const deps = daemonApiDeps({
    config,
    log,
    catalog,
    jobs: runner,
    leadership: parts.leadership ?? { isLeader: () => true, leader: () => config.node },
    restores: { engine: realParts.restores, identities: realParts.identities },
    changes: { store, trust: TEST_SIGNING.trust, decrypt: realParts.decrypt },
    metrics,
    ready: () => ({ ready: true, reasons: [] }),
  });
  return { deps, runner, metrics };
}
