import type { Etcd3 } from 'etcd3';

/**
 * Kubernetes-shaped keys and values, reproducible from a seed: `/registry/<resource>/<ns>/<name>`
 * with JSON-ish values that compress about 3:1, like real objects.
 */
export interface PopulateOptions {
  keys: number;
  /** Value sizes are drawn uniformly from [min, max] bytes. */
  valueBytes: [number, number];
  concurrency?: number;
  prefix?: string;
  seed?: number;
  /** Called after every 1,000 keys. */
  onProgress?: (keys: number, bytes: number) => void;
}

const RESOURCES = ['pods', 'configmaps', 'secrets', 'deployments', 'services', 'events', 'leases', 'endpointslices', 'replicasets'];
const NAMESPACES = ['default', 'kube-system', 'monitoring', 'ingress', 'payments', 'search', 'batch'];
const WORDS = ['"apiVersion":"v1"', '"kind":"Pod"', '"metadata":{', '"labels":{"app":"', '"spec":{"containers":[{', '"image":"registry.example/app:1.', '"resources":{"limits":{"cpu":"500m","memory":"512Mi"}}', '"status":{"phase":"Running"', '"conditions":[{"type":"Ready","status":"True"}]', '"ownerReferences":[{"kind":"ReplicaSet"', '"managedFields":[{"manager":"kube-controller-manager"', '"restartPolicy":"Always"', '"nodeName":"worker-', '"uid":"'];

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The i-th key and value for these options. */
export function entry(options: PopulateOptions, i: number): [string, Buffer] {
  const rand = prng((options.seed ?? 1) * 1_000_003 + i);
  const resource = RESOURCES[i % RESOURCES.length]!;
  const ns = NAMESPACES[Math.floor(rand() * NAMESPACES.length)]!;
  const key = `${options.prefix ?? '/registry'}/${resource}/${ns}/${resource.slice(0, -1)}-${i.toString(36)}-${Math.floor(rand() * 1e6).toString(36)}`;
  const [min, max] = options.valueBytes;
  const size = min + Math.floor(rand() * (max - min + 1));
  const parts: string[] = [];
  let length = 0;
  while (length < size) {
    const piece = rand() < 0.8 ? Math.floor(rand() * 2 ** 52).toString(16).padStart(13, '0') : WORDS[Math.floor(rand() * WORDS.length)]!;
    parts.push(piece);
    length += piece.length;
  }
  return [key, Buffer.from(parts.join('')).subarray(0, size)];
}

/** Every key and value populate() wrote, regenerated (nothing is kept in memory). */
export function* entries(options: PopulateOptions): Generator<[string, Buffer]> {
  for (let i = 0; i < options.keys; i++) yield entry(options, i);
}

export async function populate(client: Etcd3, options: PopulateOptions): Promise<{ keys: number; bytes: number }> {
  const concurrency = options.concurrency ?? 64;
  let next = 0;
  let bytes = 0;
  let done = 0;
  const worker = async () => {
    while (next < options.keys) {
      const i = next++;
      const [key, value] = entry(options, i);
      await client.put(key).value(value).exec();
      bytes += value.length;
      done += 1;
      if (done % 1000 === 0) options.onProgress?.(done, bytes);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { keys: options.keys, bytes };
}

/** populate() through a new client of `rig` (an etcd rig, or a control plane of node roots), closed after. */
export async function populateRig(rig: { client(): Etcd3 }, options: PopulateOptions): Promise<{ keys: number; bytes: number }> {
  const client = rig.client();
  try {
    return await populate(client, options);
  } finally {
    client.close();
  }
}
