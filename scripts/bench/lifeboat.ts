import path from 'node:path';
import { timed, type Measured, type TimedOptions } from './measure.ts';

const REPO = path.resolve(import.meta.dirname, '../..');

/** Where a backup's wall time went, from its JSON log lines (log level info or lower). */
export interface BackupPhases {
  /** Process start, config, leftover cleanup and exit: wall time outside runBackup. */
  startSeconds: number;
  /** Choosing the member, reading the kit, opening the snapshot. */
  setupSeconds: number;
  /** Snapshot → tar → compress → encrypt → store, until the upload completed. */
  streamSeconds: number;
  /** Checking the stored object and writing the manifest. */
  commitSeconds: number;
}

export interface BackupRun extends Measured {
  phases: BackupPhases | undefined;
}

/** The CLI from source, as `npm run lifeboat` runs it. */
export const SOURCE_CLI = path.join(REPO, 'src/cli/main.ts');

/**
 * `lifeboat backup` through the CLI (from source unless `cli` names another entry point, such
 * as a build's dist/cli/main.js), run as the bin runs it (Node with --max-semi-space-size=1),
 * timed from process start to exit.
 */
export async function lifeboatBackup(config: string, options: TimedOptions & { cli?: string }): Promise<BackupRun> {
  const run = await timed(process.execPath, ['--max-semi-space-size=1', options.cli ?? SOURCE_CLI, '--config', config, 'backup'], { ...options, threads: true });
  return { ...run, phases: phases(run.seconds, run.stderr) };
}

function phases(wallSeconds: number, stderr: string): BackupPhases | undefined {
  const byPhase = new Map<string, { durationMs?: number; seconds?: number }>();
  for (const line of stderr.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const entry = JSON.parse(line) as { phase?: string; durationMs?: number; seconds?: number };
      if (entry.phase) byPhase.set(entry.phase, entry);
    } catch {
      // not a log line
    }
  }
  const started = byPhase.get('snapshot-started')?.durationMs;
  const stored = byPhase.get('archive-stored')?.durationMs;
  const committed = byPhase.get('committed')?.durationMs;
  if (started === undefined || stored === undefined || committed === undefined) return undefined;
  return {
    startSeconds: wallSeconds - committed / 1000,
    setupSeconds: started / 1000,
    streamSeconds: (stored - started) / 1000,
    commitSeconds: (committed - stored) / 1000,
  };
}
