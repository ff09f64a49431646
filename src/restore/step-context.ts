import path from 'node:path';
import type { Transform } from 'node:stream';
import type { Logger } from 'pino';
import type { Executor } from '../exec/executor.ts';
import type { BackupStore } from '../store/store.ts';
import type { Throwaway } from './etcd.ts';
import type { RestoreJournal, StepState } from './journal.ts';
import type { DryRunResult } from './journal-model.ts';
import { dataDirLayout, type PlanContext, type RestoreConfig, type RestorePlan } from './plan.ts';

/** What every restore step gets: the engine's parts, the plan and its journal, and where `/` is. */
export interface EngineDeps {
  store: BackupStore;
  catalog: PlanContext['catalog'];
  /** An age decryptor for these identities. */
  decrypt: (identities: readonly string[]) => Transform;
  exec: Executor;
  log: Logger;
  config: RestoreConfig;
  now: () => Date;
  /** The committed change log, for point-in-time restores (PlanContext.changeLog); given the identities. */
  changeLog?: (identities: readonly string[]) => ReturnType<NonNullable<PlanContext['changeLog']>>;
}

export interface StepContext {
  deps: EngineDeps;
  plan: RestorePlan;
  journal: RestoreJournal;
  dry: boolean;
  /** The local path playing `/`: kit.hostRoot, or the dry-run root. */
  root: string;
  identities: readonly string[];
  signal: AbortSignal | undefined;
  log: Logger;
  /** The step's state before this attempt: `running` means a crash or a cancellation cut it off. */
  previous: StepState;
  /** A dry run's throwaway etcd on the restored data, from start-etcd until the end. */
  throwaway: Throwaway | undefined;
  save(): Promise<void>;
}

export type Step = (ctx: StepContext) => Promise<string>;

export const MANIFESTS = 'manifests';
export const RESTORED_ETCD = 'etcd.restored.yaml';
export const WAL_AND_SLACK = 128 << 20;

export const local = (ctx: StepContext, hostPath: string) => path.join(ctx.root, hostPath);
export const staged = (ctx: StepContext, ...parts: string[]) => path.join(ctx.plan.staging, ...parts);
export const manifestPath = (ctx: StepContext, name: string) => local(ctx, path.posix.join(ctx.deps.config.restore.manifestsDir, name));
export const layoutOf = (plan: RestorePlan) => dataDirLayout(plan.self.dataDir, plan.id, plan.self.swap);
export const dryResult = (ctx: StepContext): DryRunResult => (ctx.journal.result.dryRun ??= { wouldWait: [], wouldRun: [] });

/** Live: wait. Dry run: record what would be waited for. */
export async function waitFor(ctx: StepContext, what: string, work: () => Promise<void>): Promise<string> {
  if (ctx.dry) {
    dryResult(ctx).wouldWait.push(what);
    ctx.log.info({ phase: 'dry-run', would: `wait for ${what}` }, `dry run: would wait for ${what}`);
    return `would wait for ${what}`;
  }
  await work();
  return `waited for ${what}`;
}
