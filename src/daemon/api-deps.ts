import type { Logger } from 'pino';
import type { ApiDeps, BackupEntry } from '../api/deps.ts';
import { missingKitRoles } from '../archive/manifest.ts';
import { BUILD_INFO } from '../build-info.ts';
import { readChangeLog, type ChangeLogDeps } from '../changes/log.ts';
import type { Config } from '../config/schema.ts';
import { BackupProtectedError, ConfigError, NotFoundError } from '../errors/errors.ts';
import type { JobRunner } from '../jobs/runner.ts';
import type { Leadership } from '../leader/election.ts';
import type { RestoreEngine } from '../restore/engine.ts';
import type { Catalog } from '../store/catalog.ts';
import { isVerified } from '../verify/record.ts';
import { daemonRestores } from './restores.ts';

export interface DaemonApiParts {
  config: Config;
  log: Logger;
  catalog: Catalog;
  jobs: Pick<JobRunner, 'submit' | 'get' | 'list'>;
  leadership: Leadership;
  /** This node's restore engine, and encryption.identityFile's identities (undefined when none is configured). */
  restores: { engine: Pick<RestoreEngine, 'plan' | 'get' | 'list'>; identities: () => Promise<string[] | undefined> };
  metrics: ApiDeps['metrics'];
  ready: ApiDeps['health']['ready'];
  /** Where the change log is read from: the primary store, the trusted signing keys, age. */
  changes: ChangeLogDeps;
}

/** The API's view of the daemon: the catalogue, the one job runner, this node's restores, leadership and health. */
export function daemonApiDeps(parts: DaemonApiParts): ApiDeps {
  const { config, catalog, jobs } = parts;
  const entry = async (id: string): Promise<BackupEntry> => {
    const manifest = await catalog.resolve(id);
    const verification = await catalog.verification(manifest.backupId);
    return { manifest, ...(verification ? { verification } : {}), kitMissing: missingKitRoles(manifest) };
  };
  return {
    api: config.api,
    metricsListen: config.metrics.listen,
    identity: { cluster: config.cluster, node: config.node, version: BUILD_INFO.version },
    log: parts.log,
    backups: {
      list: ({ limit, before }) => catalog.entries({ limit, ...(before ? { before } : {}) }),
      get: entry,
      delete: async (id, requestedBy) => {
        const all = await catalog.entries();
        const target = all.find((e) => e.manifest.backupId === id);
        if (!target) throw new NotFoundError(`no backup ${id} in cluster ${config.cluster}`, { hint: 'GET /v1/backups lists them' });
        // The same two that retention always keeps, so that a good backup is always there (a
        // future-dated backup is not the newest: it can be deleted).
        const newest = all.find((e) => !e.futureDated);
        const newestVerified = all.find((e) => isVerified(e.verification));
        if (target === newest || target === newestVerified) {
          throw new BackupProtectedError(`backup ${id} is the ${target === newest ? 'newest' : 'newest verified'} backup; it is kept so that a good backup is always there`, {
            hint: 'take (and verify) a newer backup first',
          });
        }
        await catalog.deleteBackup(id);
        parts.log.info({ phase: 'deleted', backupId: id, requestedBy }, 'backup deleted');
      },
    },
    jobs,
    restores: daemonRestores({ engine: parts.restores.engine, identities: parts.restores.identities, jobs, catalog, log: parts.log }),
    changes: changesApi(parts.changes, config.cluster, parts.restores.identities),
    leadership: parts.leadership,
    health: { ready: parts.ready },
    metrics: parts.metrics,
  };
}

/** GET /v1/changes: the change log read with this node's identity (encryption.identityFile). */
export function changesApi(deps: ChangeLogDeps, cluster: string, identities: () => Promise<string[] | undefined>): ApiDeps['changes'] {
  return {
    log: async (filter, limit) => {
      const ids = await identities();
      if (!ids) {
        throw new ConfigError('/encryption/identityFile', 'reading the change log decrypts its segments, but no identity is configured on this node', {
          hint: 'mount the age identity and set encryption.identityFile, or read it with `lifeboat changes log --identity key.txt`',
        });
      }
      return readChangeLog(deps, cluster, ids, filter, limit);
    },
  };
}
