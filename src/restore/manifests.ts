import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, type Document, type YAMLMap, type YAMLSeq } from 'yaml';
import { ConfigError } from '../errors/errors.ts';

/**
 * kubeadm static pod manifests (`/etc/kubernetes/manifests/*.yaml`), read and edited as YAML
 * documents: an edit changes only the flag or volume it names, and every other line (comments,
 * probes, resources, annotations) stays as it was.
 *
 * kubeadm passes every setting as one `--flag=value` item of the first container's `command`
 * (some hand-made manifests use `args`, or `--flag value` as two items; both are read). In its
 * manifests a container path equals its host path (each hostPath volume is mounted at the same
 * path), but the mapping is read from the volumes, never assumed.
 */

/** The source is named in errors: a manifest is host state, fixed under restore.manifestsDir. */
const FIELD = '/restore/manifestsDir';

/** kubeadm's static pod manifests of etcd and kube-apiserver, in restore.manifestsDir. */
export const ETCD_MANIFEST = 'etcd.yaml';
export const APISERVER_MANIFEST = 'kube-apiserver.yaml';

interface FlagSlot {
  seq: YAMLSeq;
  /** Index of the item holding the flag. */
  index: number;
  /** `--flag=value` in one item, or `--flag` then `value` in the next. */
  joined: boolean;
}

export class StaticPod {
  readonly source: string;
  readonly #doc: Document;
  readonly #container: YAMLMap;

  readonly #indentSeq: boolean;

  private constructor(source: string, doc: Document, container: YAMLMap, indentSeq: boolean) {
    this.source = source;
    this.#doc = doc;
    this.#container = container;
    this.#indentSeq = indentSeq;
  }

  /** Parses a static pod manifest; `source` (its path) is named in every error. */
  static parse(text: string, source: string): StaticPod {
    const doc = parseDocument(text, { keepSourceTokens: false });
    if (doc.errors.length > 0) {
      throw new ConfigError(FIELD, `${source} is not valid YAML: ${doc.errors[0]!.message.split('\n')[0]}`);
    }
    if (doc.get('kind') !== 'Pod') throw new ConfigError(FIELD, `${source} is not a Pod manifest (kind: ${String(doc.get('kind'))})`);
    const containers = doc.getIn(['spec', 'containers']);
    const first = isSeq(containers) ? containers.items[0] : undefined;
    if (!isMap(first)) throw new ConfigError(FIELD, `${source} has no container in spec.containers`);
    return new StaticPod(source, doc, first, indentsSequences(text));
  }

  /** Reads and parses the manifest at `file` (a local path); `source` names it in errors. */
  static async read(file: string, source = file): Promise<StaticPod> {
    return StaticPod.parse(await readFile(file, 'utf8'), source);
  }

  /** metadata.name, e.g. `etcd` or `kube-apiserver`. */
  get name(): string {
    return String(this.#doc.getIn(['metadata', 'name']) ?? '');
  }

  /** The container's command (and args) as plain strings. */
  get argv(): string[] {
    return [...this.#strings('command'), ...this.#strings('args')];
  }

  /** The value of `--name`, or undefined when the flag is absent. */
  flag(name: string): string | undefined {
    const slot = this.#find(name);
    if (!slot) return undefined;
    if (slot.joined) {
      const item = scalarText(slot.seq.items[slot.index]);
      return item.slice(item.indexOf('=') + 1);
    }
    const next = slot.seq.items[slot.index + 1];
    return next === undefined ? '' : scalarText(next);
  }

  /** Sets `--name=value`, in place where the flag is, else appended where the other flags are. */
  setFlag(name: string, value: string): void {
    const slot = this.#find(name);
    if (slot) {
      if (slot.joined) slot.seq.set(slot.index, `--${name}=${value}`);
      else slot.seq.set(slot.index + 1, value);
      return;
    }
    const key = this.#strings('args').some((a) => a.startsWith('--')) ? 'args' : 'command';
    const seq = this.#container.get(key);
    if (isSeq(seq)) seq.add(this.#doc.createNode(`--${name}=${value}`));
    else this.#container.set(key, this.#doc.createNode([`--${name}=${value}`]));
  }

  /** The hostPath volumes and where each is mounted in the container. */
  mounts(): { volume: string; mountPath: string; hostPath: string }[] {
    const volumes = new Map<string, string>();
    const vols = this.#doc.getIn(['spec', 'volumes']);
    if (isSeq(vols)) {
      for (const v of vols.items) {
        if (!isMap(v)) continue;
        const name = v.get('name');
        const hostPath = v.getIn(['hostPath', 'path']);
        if (typeof name === 'string' && typeof hostPath === 'string') volumes.set(name, hostPath);
      }
    }
    const result: { volume: string; mountPath: string; hostPath: string }[] = [];
    const mounts = this.#container.get('volumeMounts');
    if (isSeq(mounts)) {
      for (const m of mounts.items) {
        if (!isMap(m)) continue;
        const name = m.get('name');
        const mountPath = m.get('mountPath');
        if (typeof name !== 'string' || typeof mountPath !== 'string') continue;
        const hostPath = volumes.get(name);
        if (hostPath !== undefined) result.push({ volume: name, mountPath, hostPath });
      }
    }
    return result;
  }

  /**
   * The host path a container path lives at, through the hostPath volume mounted deepest above
   * it; undefined when no hostPath volume holds it (the path would be inside the container).
   */
  hostPathOf(containerPath: string): string | undefined {
    const mount = this.#mountOf(containerPath);
    if (!mount) return undefined;
    const rest = path.posix.relative(mount.mountPath, containerPath);
    return rest === '' ? mount.hostPath : path.posix.join(mount.hostPath, rest);
  }

  /**
   * Points the hostPath volume that holds `containerPath` at `hostPath`. When `containerPath`
   * is the mount point itself (kubeadm's etcd-data volume), the volume's path becomes `hostPath`.
   */
  setHostPathOf(containerPath: string, hostPath: string): void {
    const mount = this.#mountOf(containerPath);
    if (!mount) throw new ConfigError(FIELD, `${this.source}: no hostPath volume is mounted at or above ${containerPath}`);
    const rest = path.posix.relative(mount.mountPath, containerPath);
    const volumePath = rest === '' ? hostPath : stripSuffix(hostPath, rest);
    if (volumePath === undefined) {
      throw new ConfigError(FIELD, `${this.source}: ${containerPath} is ${rest} below the ${mount.volume} volume, so its host path cannot be ${hostPath}`);
    }
    const vols = this.#doc.getIn(['spec', 'volumes']) as YAMLSeq;
    for (const v of vols.items) {
      if (isMap(v) && v.get('name') === mount.volume) v.setIn(['hostPath', 'path'], volumePath);
    }
  }

  /** The document, in the sequence style of the original (kubeadm does not indent `- ` items). */
  toString(): string {
    return this.#doc.toString({ lineWidth: 0, indentSeq: this.#indentSeq });
  }

  #mountOf(containerPath: string): { volume: string; mountPath: string; hostPath: string } | undefined {
    const clean = path.posix.normalize(containerPath);
    return this.mounts()
      .filter((m) => clean === m.mountPath || clean.startsWith(m.mountPath.replace(/\/$/, '') + '/'))
      .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  }

  #strings(key: 'command' | 'args'): string[] {
    const seq = this.#container.get(key);
    return isSeq(seq) ? seq.items.map(scalarText) : [];
  }

  #find(name: string): FlagSlot | undefined {
    for (const key of ['command', 'args'] as const) {
      const seq = this.#container.get(key);
      if (!isSeq(seq)) continue;
      for (let i = 0; i < seq.items.length; i++) {
        const item = scalarText(seq.items[i]);
        if (item.startsWith(`--${name}=`)) return { seq, index: i, joined: true };
        if (item === `--${name}`) return { seq, index: i, joined: false };
      }
    }
    return undefined;
  }
}

/** Whether the first block sequence is indented below its key (`key:\n  - a`) or not (`key:\n- a`). */
function indentsSequences(text: string): boolean {
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i++) {
    const item = /^( *)- /.exec(lines[i]!);
    const key = /^( *)[^\s#-][^:]*:\s*$/.exec(lines[i - 1]!);
    if (item && key) return item[1]!.length > key[1]!.length;
  }
  return true;
}

function scalarText(node: unknown): string {
  if (isScalar(node)) return String(node.value);
  return String(node);
}

function stripSuffix(hostPath: string, rest: string): string | undefined {
  const clean = path.posix.normalize(hostPath);
  return clean.endsWith('/' + rest) ? clean.slice(0, -rest.length - 1) : undefined;
}

/** A URL list flag (`--listen-client-urls=a,b`) as URLs; bad entries are a ConfigError naming the flag. */
function urlList(pod: StaticPod, flag: string): URL[] {
  const value = pod.flag(flag);
  if (value === undefined || value === '') return [];
  return value.split(',').map((u) => {
    try {
      return new URL(u.trim());
    } catch {
      throw new ConfigError(FIELD, `${pod.source}: --${flag} holds ${JSON.stringify(u)}, which is not a URL`);
    }
  });
}

/** Where something listening on `url` can be reached from this host (a wildcard means loopback). */
export function probeAddress(url: URL): { host: string; port: number } {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
  return { host: host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host, port };
}

export interface EtcdPodFacts {
  name: string | undefined;
  dataDir: string | undefined;
  /** The host path of the data dir, through the pod's hostPath volumes. */
  hostDataDir: string | undefined;
  listenClientURLs: URL[];
  listenPeerURLs: URL[];
  advertiseClientURLs: URL[];
  initialAdvertisePeerURLs: URL[];
  initialCluster: string | undefined;
  initialClusterToken: string | undefined;
  initialClusterState: string | undefined;
}

export function etcdFacts(pod: StaticPod): EtcdPodFacts {
  const dataDir = pod.flag('data-dir');
  return {
    name: pod.flag('name'),
    dataDir,
    hostDataDir: dataDir === undefined ? undefined : pod.hostPathOf(dataDir),
    listenClientURLs: urlList(pod, 'listen-client-urls'),
    listenPeerURLs: urlList(pod, 'listen-peer-urls'),
    advertiseClientURLs: urlList(pod, 'advertise-client-urls'),
    initialAdvertisePeerURLs: urlList(pod, 'initial-advertise-peer-urls'),
    initialCluster: pod.flag('initial-cluster'),
    initialClusterToken: pod.flag('initial-cluster-token'),
    initialClusterState: pod.flag('initial-cluster-state'),
  };
}

/**
 * The client URL this host reaches its own etcd member at: a loopback listen URL if there is
 * one (kubeadm listens on https://127.0.0.1:2379 too), else the first listen or advertise URL.
 */
export function localClientURL(facts: EtcdPodFacts): URL | undefined {
  const all = [...facts.listenClientURLs, ...facts.advertiseClientURLs];
  return all.find((u) => ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)) ?? all[0];
}

/** Every address:port the etcd member listens on (clients and peers): all must close before its data dir moves. */
export function etcdListenAddresses(facts: EtcdPodFacts): { host: string; port: number }[] {
  return [...facts.listenClientURLs, ...facts.listenPeerURLs].map(probeAddress);
}

/** The kube-apiserver's secure port and the address to probe it at (`--secure-port`, default 6443). */
export function apiserverAddress(pod: StaticPod): { host: string; port: number } {
  const portFlag = pod.flag('secure-port');
  const port = portFlag === undefined ? 6443 : Number(portFlag);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new ConfigError(FIELD, `${pod.source}: --secure-port=${portFlag} is not a port`);
  }
  const bind = pod.flag('bind-address');
  const host = bind === undefined || bind === '' || bind === '0.0.0.0' || bind === '::' ? '127.0.0.1' : bind;
  return { host, port };
}

/**
 * A line diff of two small texts (manifests), unified style: ` ` kept, `-` removed, `+` added,
 * with `context` unchanged lines around each change. Longest common subsequence, quadratic in
 * the line count, which is fine for files of a few hundred lines.
 */
export function lineDiff(before: string, after: string, labels: [string, string] = ['before', 'after'], context = 3): string {
  const a = before.split('\n');
  const b = after.split('\n');
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const ops: { op: ' ' | '-' | '+'; line: string }[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ op: ' ', line: a[i]! });
      i++;
      j++;
    } else if (i < n && (j === m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      ops.push({ op: '-', line: a[i]! });
      i++;
    } else {
      ops.push({ op: '+', line: b[j]! });
      j++;
    }
  }
  const changed = ops.map((o) => o.op !== ' ');
  if (!changed.includes(true)) return '';
  const keep = ops.map((_, k) => changed.slice(Math.max(0, k - context), k + context + 1).includes(true));
  const out = [`--- ${labels[0]}`, `+++ ${labels[1]}`];
  let skipping = false;
  ops.forEach((o, k) => {
    if (keep[k]) {
      out.push(`${o.op}${o.line}`);
      skipping = false;
    } else if (!skipping) {
      out.push('@@');
      skipping = true;
    }
  });
  return out.join('\n') + '\n';
}
