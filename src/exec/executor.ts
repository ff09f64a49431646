import { execFile } from 'node:child_process';
import { ToolError } from '../errors/errors.ts';

/** Every external tool (etcdutl now; kubeadm later) runs through this, so tests can swap it. */
export interface Executor {
  run(command: string, args: readonly string[], options?: { timeoutMs?: number }): Promise<{ stdout: string; stderr: string }>;
}

export const processExecutor: Executor = {
  run(command, args, options = {}) {
    return new Promise((resolve, reject) => {
      execFile(command, [...args], { timeout: options.timeoutMs ?? 300_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const code = (err as NodeJS.ErrnoException).code;
        const detail = code === 'ENOENT'
          ? `${command} is not installed or not on PATH`
          : (stderr.trim().split('\n').pop() ?? err.message);
        reject(new ToolError(`${command} ${args[0] ?? ''} ${args[1] ?? ''}`.trim() + ` failed: ${detail}`, {
          cause: err,
          ...(code === 'ENOENT' ? { hint: 'install etcd 3.5+ (etcdutl) or set tools.etcdutl' } : {}),
        }));
      });
    });
  },
};
