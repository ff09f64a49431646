/**
 * A stand-in kubelet for the lab's hosts (scripts/lab/kubelet-main.ts runs it in a host's own
 * mount namespace): kubelet and a container runtime are not available on these machines, and
 * restores are about static pods. It does what the kubelet does with the static pod directory,
 * and nothing more:
 *
 * - It polls `/etc/kubernetes/manifests` every 100 ms. Like the kubelet it reads only regular
 *   files whose names do not start with `.` (so atomic writes through a hidden temp file are
 *   never seen half-written), and it does not recurse.
 * - A new manifest starts a pod; a changed manifest (other bytes) restarts it; a manifest that
 *   leaves stops it: SIGTERM to the process it started (by PID), SIGKILL after 5 s.
 * - A hostPath volume of type DirectoryOrCreate is created (mode 0755) when missing, as the
 *   kubelet does.
 * - A pod whose command is named in `components` (the lab passes the real etcd, kube-apiserver,
 *   kube-controller-manager and kube-scheduler) runs that binary with the manifest's own flags,
 *   unchanged: in a lab host every path is the real one. A process that exits is restarted after
 *   a second (restartPolicy Always).
 * - Other pods are recorded as not simulated.
 *
 * Each pod's output goes to `<logDir>/<manifest>.log`; the kubelet's own events to
 * `<logDir>/kubelet.log`. `stop()` stops every pod it started.
 */
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parse } from 'yaml';
import { spawnLogged, stopChild } from '../rig/process.ts';

export interface KubeletOptions {
  /** The real binary of each component, by the name of the manifest's command. */
  components: Record<string, string>;
  logDir: string;
  /** Host path of the static pod directory. */
  manifestsDir?: string;
  pollMs?: number;
}

export type PodState = 'running' | 'restarting' | 'failed' | 'not-simulated';

export interface PodStatus {
  file: string;
  component: string;
  state: PodState;
  pid?: number;
  starts: number;
  error?: string;
}

interface Pod {
  file: string;
  hash: string;
  component: string;
  state: PodState;
  starts: number;
  error?: string;
  child?: ChildProcess;
  /** When a crashed process may be started again. */
  restartAt?: number;
  spec?: Spec;
}

interface Spec {
  command: string[];
  /** The pod's hostPath volumes. */
  hostPaths: { path: string; type: string | undefined }[];
}

export class StandInKubelet {
  readonly #opts: Required<KubeletOptions>;
  readonly #pods = new Map<string, Pod>();
  #stopped = false;
  #loop: Promise<void> | undefined;

  private constructor(opts: KubeletOptions) {
    this.#opts = { manifestsDir: '/etc/kubernetes/manifests', pollMs: 100, ...opts };
  }

  static async start(opts: KubeletOptions): Promise<StandInKubelet> {
    const kubelet = new StandInKubelet(opts);
    await mkdir(opts.logDir, { recursive: true });
    await kubelet.#sync();
    kubelet.#loop = kubelet.#run();
    return kubelet;
  }

  pods(): PodStatus[] {
    return [...this.#pods.values()].map((p) => ({
      file: p.file,
      component: p.component,
      state: p.state,
      starts: p.starts,
      ...(p.child?.pid !== undefined && p.state === 'running' ? { pid: p.child.pid } : {}),
      ...(p.error ? { error: p.error } : {}),
    }));
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
    await Promise.all([...this.#pods.values()].map((p) => this.#stopPod(p)));
    this.#pods.clear();
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      await sleep(this.#opts.pollMs);
      if (this.#stopped) break;
      try {
        await this.#sync();
      } catch (err) {
        this.#event(`sync failed: ${(err as Error).message}`);
      }
    }
  }

  #event(line: string): void {
    appendFileSync(path.join(this.#opts.logDir, 'kubelet.log'), `${new Date().toISOString()} ${line}\n`);
  }

  async #sync(): Promise<void> {
    const dir = this.#opts.manifestsDir;
    const names = await readdir(dir).catch(() => [] as string[]);
    const seen = new Map<string, { hash: string; text: string }>();
    for (const name of names) {
      if (name.startsWith('.')) continue;
      const file = path.join(dir, name);
      const s = await stat(file).catch(() => undefined);
      if (!s?.isFile()) continue;
      const text = await readFile(file, 'utf8').catch(() => undefined);
      if (text === undefined) continue;
      seen.set(name, { hash: createHash('sha256').update(text).digest('hex'), text });
    }
    for (const [name, pod] of this.#pods) {
      const now = seen.get(name);
      if (!now || now.hash !== pod.hash) {
        this.#event(`${name} ${now ? 'changed' : 'removed'}: stopping ${pod.component}`);
        await this.#stopPod(pod);
        this.#pods.delete(name);
      }
    }
    for (const [name, { hash, text }] of seen) {
      const pod = this.#pods.get(name);
      if (!pod) {
        const created: Pod = { file: name, hash, component: '?', state: 'failed', starts: 0 };
        this.#pods.set(name, created);
        this.#event(`${name} appeared`);
        await this.#startPod(created, text);
      } else if (pod.state === 'restarting' && Date.now() >= (pod.restartAt ?? 0)) {
        this.#launch(pod);
      }
    }
  }

  async #startPod(pod: Pod, text: string): Promise<void> {
    let spec: Spec;
    try {
      spec = readSpec(text);
    } catch (err) {
      pod.error = `invalid manifest: ${(err as Error).message}`;
      this.#event(`${pod.file}: ${pod.error}`);
      return;
    }
    pod.spec = spec;
    pod.component = path.basename(spec.command[0] ?? '?');
    if (!(pod.component in this.#opts.components)) {
      pod.state = 'not-simulated';
      return;
    }
    for (const v of spec.hostPaths) {
      if (v.type === 'DirectoryOrCreate') await mkdir(v.path, { recursive: true, mode: 0o755 });
    }
    this.#launch(pod);
  }

  #launch(pod: Pod): void {
    const spec = pod.spec!;
    pod.starts += 1;
    delete pod.error;
    try {
      this.#launchProcess(pod, this.#opts.components[pod.component]!, spec.command.slice(1));
      pod.state = 'running';
      this.#event(`${pod.file}: started ${pod.component}${pod.child ? ` (pid ${pod.child.pid})` : ''}, start ${pod.starts}`);
    } catch (err) {
      pod.state = 'restarting';
      pod.restartAt = Date.now() + 1000;
      pod.error = (err as Error).message;
      this.#event(`${pod.file}: cannot start ${pod.component}: ${pod.error}`);
    }
  }

  /** Runs `binary args` for a pod, restarted a second after it exits (restartPolicy Always). */
  #launchProcess(pod: Pod, binary: string, args: string[]): void {
    const child = spawnLogged(binary, args, path.join(this.#opts.logDir, `${pod.file}.log`));
    pod.child = child;
    child.once('exit', (code, signal) => {
      if (pod.child !== child || this.#stopped) return;
      this.#event(`${pod.file}: ${pod.component} (pid ${child.pid}) exited (${signal ?? `code ${code}`}); restarting in 1 s`);
      pod.state = 'restarting';
      pod.restartAt = Date.now() + 1000;
    });
  }

  async #stopPod(pod: Pod): Promise<void> {
    if (pod.child) await stopChild(pod.child);
    delete pod.child;
  }
}

function readSpec(text: string): Spec {
  const doc = parse(text) as { kind?: string; spec?: { containers?: { command?: string[]; args?: string[] }[]; volumes?: { hostPath?: { path: string; type?: string } }[] } };
  if (doc?.kind !== 'Pod') throw new Error('not a Pod');
  const container = doc.spec?.containers?.[0];
  if (!container) throw new Error('no container');
  const hostPaths = (doc.spec?.volumes ?? []).flatMap((v) => (v.hostPath ? [{ path: v.hostPath.path, type: v.hostPath.type }] : []));
  return { command: [...(container.command ?? []), ...(container.args ?? [])], hostPaths };
}
