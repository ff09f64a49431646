/**
 * A stand-in kubelet for tests: kubelet and a container runtime are not available on these
 * machines, and restores are about static pods. It does, for one host root, what the kubelet
 * does with the static pod directory, and nothing more:
 *
 * - It polls `<root>/etc/kubernetes/manifests` every 100 ms. Like the kubelet it reads only
 *   regular files whose names do not start with `.` (so atomic writes through a hidden temp file
 *   are never seen half-written), and it does not recurse.
 * - A new manifest starts a pod; a changed manifest (other bytes) restarts it; a manifest that
 *   leaves stops it: SIGTERM to the process it started (by PID), SIGKILL after 5 s.
 * - A hostPath volume of type DirectoryOrCreate is created (mode 0755) when missing, as the
 *   kubelet does. Container paths map to host paths through the pod's hostPath volumes (in
 *   kubeadm's manifests they are equal), under `<root>`. A path flag outside every hostPath
 *   volume is refused: in a real container it would land in the container's own filesystem.
 * - `etcd` (the first container's command) runs the real etcd binary with the manifest's flags,
 *   path flags mapped. A process that exits is restarted after a second (restartPolicy Always).
 * - A component named in `components` (the lab passes the real etcd, kube-apiserver,
 *   kube-controller-manager and kube-scheduler) runs that binary with the manifest's own flags,
 *   unchanged: only on the root `/` (a lab host's own mount namespace), where every path is real.
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
import { spawnLogged, stopChild } from './process.ts';

export interface KubeletOptions {
  /** The host root: every host path is under it. */
  root: string;
  /** The etcd server binary. */
  etcd: string;
  /** Real binaries for other components (by the name of the manifest's command); needs root `/`. */
  components?: Record<string, string>;
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
  volumes: { mountPath: string; hostPath: string; type: string | undefined }[];
}

/** Flags of etcd that hold paths. */
const ETCD_PATH_FLAGS = ['data-dir', 'wal-dir', 'cert-file', 'key-file', 'trusted-ca-file', 'peer-cert-file', 'peer-key-file', 'peer-trusted-ca-file', 'client-crl-file', 'peer-crl-file'];

export class StandInKubelet {
  readonly #opts: Required<KubeletOptions>;
  readonly #pods = new Map<string, Pod>();
  #stopped = false;
  #loop: Promise<void> | undefined;

  private constructor(opts: KubeletOptions) {
    this.#opts = { manifestsDir: '/etc/kubernetes/manifests', pollMs: 100, components: {}, ...opts };
    if (Object.keys(this.#opts.components).length > 0 && opts.root !== '/') throw new Error('real components run only on the root / (a lab host), where their paths are real');
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
    const dir = path.join(this.#opts.root, this.#opts.manifestsDir);
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
    if (pod.component !== 'etcd' && !(pod.component in this.#opts.components)) {
      pod.state = 'not-simulated';
      return;
    }
    for (const v of spec.volumes) {
      if (v.type === 'DirectoryOrCreate') await mkdir(path.join(this.#opts.root, v.hostPath), { recursive: true, mode: 0o755 });
    }
    this.#launch(pod);
  }

  #launch(pod: Pod): void {
    const spec = pod.spec!;
    pod.starts += 1;
    delete pod.error;
    try {
      const binary = this.#opts.components[pod.component];
      if (binary !== undefined) this.#launchProcess(pod, binary, spec.command.slice(1));
      else this.#launchEtcd(pod, spec);
      pod.state = 'running';
      this.#event(`${pod.file}: started ${pod.component}${pod.child ? ` (pid ${pod.child.pid})` : ''}, start ${pod.starts}`);
    } catch (err) {
      pod.state = 'restarting';
      pod.restartAt = Date.now() + 1000;
      pod.error = (err as Error).message;
      this.#event(`${pod.file}: cannot start ${pod.component}: ${pod.error}`);
    }
  }

  /** A container path on the host, through the hostPath volumes, under the root. */
  #host(spec: Spec, containerPath: string): string {
    const clean = path.posix.normalize(containerPath);
    const mount = spec.volumes
      .filter((v) => clean === v.mountPath || clean.startsWith(v.mountPath.replace(/\/$/, '') + '/'))
      .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    if (!mount) throw new Error(`${containerPath} is on no hostPath volume: it would live inside the container`);
    return path.join(this.#opts.root, mount.hostPath, path.posix.relative(mount.mountPath, clean));
  }

  #launchEtcd(pod: Pod, spec: Spec): void {
    const args = spec.command.slice(1).map((arg) => {
      const m = /^--([^=]+)=(.*)$/.exec(arg);
      if (m && ETCD_PATH_FLAGS.includes(m[1]!) && m[2]!.startsWith('/')) return `--${m[1]}=${this.#host(spec, m[2]!)}`;
      return arg;
    });
    this.#launchProcess(pod, this.#opts.etcd, args);
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
  const doc = parse(text) as { kind?: string; spec?: { containers?: { command?: string[]; args?: string[]; volumeMounts?: { name: string; mountPath: string }[] }[]; volumes?: { name: string; hostPath?: { path: string; type?: string } }[] } };
  if (doc?.kind !== 'Pod') throw new Error('not a Pod');
  const container = doc.spec?.containers?.[0];
  if (!container) throw new Error('no container');
  const hostPaths = new Map((doc.spec?.volumes ?? []).filter((v) => v.hostPath).map((v) => [v.name, v.hostPath!]));
  const volumes = (container.volumeMounts ?? []).flatMap((m) => {
    const h = hostPaths.get(m.name);
    return h ? [{ mountPath: m.mountPath, hostPath: h.path, type: h.type }] : [];
  });
  return { command: [...(container.command ?? []), ...(container.args ?? [])], volumes };
}
