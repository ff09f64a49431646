import { execFile, spawn, type StdioOptions } from 'node:child_process';
import { open } from 'node:fs/promises';
import { CancelledError, ToolError } from '../errors/errors.ts';

export interface RunOptions {
  timeoutMs?: number;
  /** Aborting kills the tool (SIGTERM) and rejects with CancelledError. */
  signal?: AbortSignal;
}

export interface StartOptions {
  /** Append the child's stdout and stderr to this file (created with mode 0600); otherwise discarded. */
  output?: string;
  /** The child's working directory; this process's by default. */
  cwd?: string;
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A long-running child process, started by `Executor.start`. */
export interface RunningProcess {
  readonly pid: number;
  /** Settles (never rejects) once the child has exited. */
  readonly exited: Promise<ProcessExit>;
  /**
   * SIGTERM to this child (by its PID, nothing else), then SIGKILL if it is still running after
   * `graceMs`. Resolves once it has exited; at once if it already had.
   */
  stop(graceMs: number): Promise<void>;
}

/**
 * Every external tool (etcdutl, etcd, kubeadm) runs through this, so tests can swap it.
 * `run` waits for a tool to finish; `start` launches a long-running one (a throwaway etcd).
 */
export interface Executor {
  run(command: string, args: readonly string[], options?: RunOptions): Promise<{ stdout: string; stderr: string }>;
  start(command: string, args: readonly string[], options?: StartOptions): Promise<RunningProcess>;
}

/** The tools are etcdutl, etcd and kubeadm, each with its path under `tools`. */
const NOT_INSTALLED = 'install it, or set its path under tools in the config';

export const processExecutor: Executor = {
  run(command, args, options = {}) {
    return new Promise((resolve, reject) => {
      const what = `${command} ${args[0] ?? ''} ${args[1] ?? ''}`.trim();
      const execOptions = { timeout: options.timeoutMs ?? 300_000, maxBuffer: 16 << 20, ...(options.signal ? { signal: options.signal } : {}) };
      execFile(command, [...args], execOptions, (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        if (options.signal?.aborted) return reject(new CancelledError(`${what} was cancelled`, { cause: err }));
        const code = (err as NodeJS.ErrnoException).code;
        const detail = code === 'ENOENT'
          ? `${command} is not installed or not on PATH`
          : (stderr.trim().split('\n').pop() ?? err.message);
        reject(new ToolError(`${what} failed: ${detail}`, { cause: err, ...(code === 'ENOENT' ? { hint: NOT_INSTALLED } : {}) }));
      });
    });
  },

  /**
   * Spawns `command` and resolves once it runs; a command that cannot be started (missing, not
   * executable) is a ToolError. The child never outlives this process: it is SIGKILLed when
   * this process exits, unless it exited first. (Only a SIGKILL of this process escapes that;
   * in a pod, the container's end takes the child with it.)
   */
  async start(command, args, options = {}) {
    const output = options.output === undefined ? undefined : await open(options.output, 'a', 0o600);
    try {
      const stdio: StdioOptions = output ? ['ignore', output.fd, output.fd] : 'ignore';
      const child = spawn(command, [...args], { stdio, ...(options.cwd === undefined ? {} : { cwd: options.cwd }) });
      const exited = new Promise<ProcessExit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', (err: NodeJS.ErrnoException) => {
          const detail = err.code === 'ENOENT' ? 'not found' : err.code === 'EACCES' ? 'not executable' : err.message;
          reject(new ToolError(`cannot start ${command}: ${detail}`, { cause: err, hint: NOT_INSTALLED }));
        });
      });
      const pid = child.pid!;
      // Later errors (a failed kill of an exited child) change nothing: `exited` tells the state.
      child.on('error', () => undefined);
      const killOnExit = () => {
        child.kill('SIGKILL');
      };
      process.on('exit', killOnExit);
      void exited.then(() => process.off('exit', killOnExit));
      const gone = () => child.exitCode !== null || child.signalCode !== null;
      return {
        pid,
        exited,
        async stop(graceMs) {
          if (gone()) return;
          const force = setTimeout(() => {
            if (!gone()) child.kill('SIGKILL');
          }, graceMs);
          child.kill('SIGTERM');
          try {
            await exited;
          } finally {
            clearTimeout(force);
          }
        },
      };
    } finally {
      // The child holds its own copy of the descriptor.
      await output?.close();
    }
  },
};
