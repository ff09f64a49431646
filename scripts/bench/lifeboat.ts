import { execFile } from 'node:child_process';
import { copyFile, mkdir, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
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

/** The CLI from source, as `npm run lifeboat` runs it (Node strips the types as it loads each file). */
export const SOURCE_CLI = path.join(REPO, 'src/cli/main.ts');

/** Which Lifeboat a benchmark runs, and how to say so in its output. */
export interface LifeboatCli {
  path: string;
  what: string;
}

/**
 * Builds this checkout as `npm run build` does (tsc -p tsconfig.build.json), but into
 * `<dir>/dist` with package.json beside it and node_modules linked, leaving the checkout's own
 * dist/ alone: the JavaScript the installed `lifeboat` bin runs. Running src/ instead costs
 * Node's type stripping, about 25 MiB more peak RSS and a slower start.
 */
async function buildLifeboat(dir: string): Promise<LifeboatCli> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const tsc = path.join(REPO, 'node_modules/.bin/tsc');
  await promisify(execFile)(tsc, ['-p', path.join(REPO, 'tsconfig.build.json'), '--outDir', path.join(dir, 'dist'), '--sourceMap', 'false'], { cwd: REPO, maxBuffer: 16 << 20 }).catch((err: { stdout?: string; message: string }) => {
    // tsc emits even with type errors (noEmitOnError is off); a missing entry point is what matters.
    if (!String(err.stdout ?? '').includes('error TS')) throw err;
    console.error(`warning: tsc reported type errors; benchmarking what it emitted:\n${String(err.stdout).slice(0, 2000)}`);
  });
  await copyFile(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
  await symlink(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  return { path: path.join(dir, 'dist/cli/main.js'), what: 'built from this checkout with tsc (npm run build), as the installed lifeboat bin runs it' };
}

/** The Lifeboat to benchmark: `--from dist` (the default: built into `scratch`), `--from src`, or `--cli FILE`. */
export async function chooseLifeboat(from: string, cli: string | undefined, scratch: string): Promise<LifeboatCli> {
  if (cli !== undefined) return { path: path.resolve(cli), what: 'the entry point given with --cli' };
  if (from === 'src') return { path: SOURCE_CLI, what: 'from source, types stripped by Node as npm run lifeboat runs it' };
  if (from === 'dist') return buildLifeboat(path.join(scratch, 'build'));
  throw new Error(`--from: expected dist or src, got ${from}`);
}

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
