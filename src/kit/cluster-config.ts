import { isMap, parseAllDocuments } from 'yaml';
import type { KitSource } from '../archive/manifest.ts';
import { KubeObjectError } from '../errors/errors.ts';
import { decodeConfigMap } from './kube-object.ts';

/**
 * kubeadm keeps the ClusterConfiguration it was initialised with (and that `kubeadm upgrade`
 * updates) in the ConfigMap kube-system/kubeadm-config, under the data key
 * `ClusterConfiguration`: `kubeadm init` writes no file of it. The kube-apiserver stores that
 * ConfigMap in etcd under this key.
 */
export const KUBEADM_CONFIGMAP = { namespace: 'kube-system', name: 'kubeadm-config', dataKey: 'ClusterConfiguration' } as const;
export const KUBEADM_CONFIGMAP_ETCD_KEY = `/registry/configmaps/${KUBEADM_CONFIGMAP.namespace}/${KUBEADM_CONFIGMAP.name}`;

export type ClusterConfigurationRead =
  | { found: true; content: Buffer; source: Extract<KitSource, { from: 'configmap' }> }
  | { found: false; reason: string };

/**
 * The ClusterConfiguration from kubeadm's ConfigMap as etcd held it at `revision`, or why there
 * is none: no such ConfigMap, encrypted at rest, malformed, no ClusterConfiguration in it, too
 * big, or etcd did not answer. Never throws for what it reads.
 */
export async function clusterConfigurationFromEtcd(
  readKey: ((key: string) => Promise<Buffer | undefined>) | undefined,
  revision: string,
  maxBytes: number,
): Promise<ClusterConfigurationRead> {
  const what = `ConfigMap ${KUBEADM_CONFIGMAP.namespace}/${KUBEADM_CONFIGMAP.name}`;
  if (!readKey) return { found: false, reason: `${what} was not read: this etcd source cannot read keys` };
  let value: Buffer | undefined;
  try {
    value = await readKey(KUBEADM_CONFIGMAP_ETCD_KEY);
  } catch (err) {
    return { found: false, reason: `${what} could not be read from etcd at revision ${revision}: ${(err as Error).message}` };
  }
  if (value === undefined) return { found: false, reason: `no ${what} in etcd at revision ${revision} (${KUBEADM_CONFIGMAP_ETCD_KEY})` };
  let configMap;
  try {
    configMap = decodeConfigMap(value);
  } catch (err) {
    if (!(err instanceof KubeObjectError)) throw err;
    if (err.problem === 'encrypted-at-rest') {
      return { found: false, reason: `${what} cannot be read from etcd: ${err.message}` };
    }
    return { found: false, reason: `${what} at revision ${revision} is ${err.problem}: ${err.message}` };
  }
  if (configMap.name !== undefined && configMap.name !== KUBEADM_CONFIGMAP.name) {
    return { found: false, reason: `${KUBEADM_CONFIGMAP_ETCD_KEY} at revision ${revision} holds ConfigMap ${JSON.stringify(configMap.name)}, not ${KUBEADM_CONFIGMAP.name}` };
  }
  const text = configMap.data.get(KUBEADM_CONFIGMAP.dataKey);
  if (text === undefined) {
    const keys = [...configMap.data.keys()];
    return { found: false, reason: `${what} has no data key ${KUBEADM_CONFIGMAP.dataKey} (it has ${keys.length === 0 ? 'none' : keys.map((k) => JSON.stringify(k)).join(', ')})` };
  }
  const content = Buffer.from(text, 'utf8');
  if (content.length > maxBytes) {
    return { found: false, reason: `${what} holds a ${KUBEADM_CONFIGMAP.dataKey} of ${content.length} bytes, over kit.maxFileBytes (${maxBytes})` };
  }
  const problem = notAClusterConfiguration(text);
  if (problem) return { found: false, reason: `${what}'s ${KUBEADM_CONFIGMAP.dataKey} is malformed: ${problem}` };
  return {
    found: true,
    content,
    source: { from: 'configmap', ...KUBEADM_CONFIGMAP, etcdKey: KUBEADM_CONFIGMAP_ETCD_KEY, revision, encoding: configMap.encoding },
  };
}

/** Why `text` is not YAML holding a ClusterConfiguration document; undefined when it is. */
function notAClusterConfiguration(text: string): string | undefined {
  const docs = parseAllDocuments(text);
  if (!Array.isArray(docs)) return 'it is not YAML';
  const bad = docs.find((d) => d.errors.length > 0);
  if (bad) return `it is not valid YAML: ${bad.errors[0]!.message.split('\n')[0]}`;
  const kinds = docs.map((d) => (isMap(d.contents) ? String(d.get('kind') ?? '') : ''));
  if (!kinds.includes('ClusterConfiguration')) return `it has no document of kind ClusterConfiguration (kinds: ${kinds.map((k) => k || '(none)').join(', ') || '(none)'})`;
  return undefined;
}
