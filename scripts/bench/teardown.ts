import type { ChildProcess } from 'node:child_process';
import { mkdir, rm } from 'node:fs/promises';

/**
 * Everything a benchmark started, undone once: on success, on failure, and on Ctrl-C or
 * SIGTERM. Measured commands run in their own process group (see measure.ts), so the running
 * one is ended by its group id, which is its PID; servers and temp dirs are undone by the steps
 * added, newest first.
 */
export class Teardown {
  readonly #steps: { what: string; step: () => Promise<void> }[] = [];
  readonly #running = new Set<ChildProcess>();
  #done: Promise<void> | undefined;

  /** Adds an undo step; steps run newest first, and one failing does not stop the others. */
  add(what: string, step: () => Promise<void>): void {
    this.#steps.push({ what, step });
  }

  /** Makes `dir` anew (empty), and removes it on teardown. */
  async freshDir(dir: string): Promise<void> {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    this.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }));
  }

  /** A measured command, ended by its process group on teardown while it runs. */
  track(child: ChildProcess): void {
    this.#running.add(child);
    child.once('exit', () => this.#running.delete(child));
  }

  get started(): boolean {
    return this.#done !== undefined;
  }

  run(): Promise<void> {
    this.#done ??= this.#undo();
    return this.#done;
  }

  async #undo(): Promise<void> {
    for (const child of this.#running) {
      if (child.pid === undefined) continue;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const { what, step } of this.#steps.reverse()) {
      try {
        await step();
      } catch (err) {
        console.error(`cleanup: ${what} failed: ${(err as Error).message}`);
      }
    }
  }

  /** On SIGINT, SIGTERM or SIGHUP: undo everything, then exit as the signal would have. */
  onSignals(): void {
    const codes = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
    for (const [signal, code] of Object.entries(codes)) {
      process.once(signal, () => {
        console.error(`${signal}: stopping what the benchmark started and removing its files`);
        void this.run().finally(() => process.exit(code));
      });
    }
  }
}
