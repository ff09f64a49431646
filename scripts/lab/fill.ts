/**
 * Fills a lab cluster the way users do, through kubectl and the real apiserver: namespaces with a
 * Deployment, ConfigMaps, a Secret, a ServiceAccount, RBAC, a CustomResourceDefinition with
 * custom resources, and a ServiceAccount token minted with `kubectl create token`. Bulk ConfigMaps
 * (about 900 KiB each, under the apiserver's object limit) bring the database to `targetMiB`.
 *
 * `snapshotObjects` reads back what was made, in a form that compares equal across a restore:
 * the objects' uid, labels, data and spec, without what the apiserver rewrites on its own.
 */
import { randomBytes } from 'node:crypto';
import type { KubeCluster } from './cluster.ts';
import type { LabHost } from './hosts.ts';

export const FILL_LABEL = 'lifeboat.test/filled';
/** The kinds that `snapshotObjects` reads back, namespaced unless noted. */
export const FILLED_KINDS = ['namespaces', 'deployments.apps', 'configmaps', 'secrets', 'serviceaccounts', 'roles.rbac.authorization.k8s.io', 'rolebindings.rbac.authorization.k8s.io', 'widgets.lab.lifeboat.dev', 'customresourcedefinitions.apiextensions.k8s.io'];

export interface FillResult {
  namespaces: string[];
  /** A token for ServiceAccount `reader` in the first namespace, minted before any backup. */
  token: string;
  tokenNamespace: string;
  /** How many bulk ConfigMaps were made. */
  bulk: number;
}

const CRD = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'widgets.lab.lifeboat.dev', labels: { [FILL_LABEL]: 'true' } },
  spec: {
    group: 'lab.lifeboat.dev',
    names: { kind: 'Widget', plural: 'widgets', singular: 'widget' },
    scope: 'Namespaced',
    versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', properties: { spec: { type: 'object', properties: { size: { type: 'integer' }, colour: { type: 'string' } } } } } } }],
  },
};

function namespaceObjects(ns: string, i: number): unknown[] {
  const labels = { [FILL_LABEL]: 'true' };
  const meta = (name: string) => ({ name, namespace: ns, labels });
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels } },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('settings'), data: { index: String(i), greeting: `hello from ${ns}` } },
    { apiVersion: 'v1', kind: 'Secret', metadata: meta('credentials'), type: 'Opaque', stringData: { password: randomBytes(12).toString('hex'), user: `user-${i}` } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta('reader') },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: meta('read-config'), rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }] },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: meta('reader-reads-config'), roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'read-config' }, subjects: [{ kind: 'ServiceAccount', name: 'reader', namespace: ns }] },
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: meta('web'),
      spec: { replicas: 2, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'web', image: 'registry.example/web:1.0', env: [{ name: 'INDEX', value: String(i) }] }] } } },
    },
    { apiVersion: 'lab.lifeboat.dev/v1', kind: 'Widget', metadata: meta('gizmo'), spec: { size: i, colour: i % 2 ? 'red' : 'blue' } },
  ];
}

async function apply(cluster: KubeCluster, items: unknown[], host?: LabHost): Promise<void> {
  const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items });
  await cluster.kubectl(['apply', '--server-side', '-f', '-'], { input: list, host });
}

/** Makes `namespaces` namespaces of objects and enough bulk ConfigMaps for about `targetMiB`. */
export async function fillCluster(cluster: KubeCluster, options: { namespaces?: number; targetMiB?: number } = {}): Promise<FillResult> {
  const count = options.namespaces ?? 3;
  await apply(cluster, [CRD]);
  await cluster.kubectl(['wait', '--for=condition=Established', '--timeout=60s', 'crd/widgets.lab.lifeboat.dev']);
  const namespaces = Array.from({ length: count }, (_, i) => `app-${i + 1}`);
  for (const [i, ns] of namespaces.entries()) await apply(cluster, namespaceObjects(ns, i + 1));

  // Bulk data: 900 KiB ConfigMaps in namespace bulk, in batches of 8 per kubectl call.
  const bulk = Math.ceil(((options.targetMiB ?? 0) * 1024) / 900);
  if (bulk > 0) {
    await apply(cluster, [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'bulk', labels: { [FILL_LABEL]: 'true' } } }]);
    for (let start = 0; start < bulk; start += 8) {
      const items = Array.from({ length: Math.min(8, bulk - start) }, (_, j) => ({
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name: `blob-${start + j}`, namespace: 'bulk', labels: { [FILL_LABEL]: 'true' } },
        data: { blob: randomBytes(900 * 512).toString('hex') },
      }));
      await apply(cluster, items);
    }
  }
  const tokenNamespace = namespaces[0]!;
  const token = (await cluster.kubectl(['create', 'token', 'reader', '-n', tokenNamespace, '--duration=24h'])).stdout.trim();
  return { namespaces, token, tokenNamespace, bulk };
}

/** The filled objects, keyed `kind/namespace/name`, in a form that must compare equal after a restore. */
export async function snapshotObjects(cluster: Pick<KubeCluster, 'kubectl'>, host?: LabHost): Promise<Map<string, string>> {
  const out = await cluster.kubectl(['get', FILLED_KINDS.join(','), '-A', '-l', FILL_LABEL, '-o', 'json'], { host });
  const doc = JSON.parse(out.stdout) as { items: { kind: string; metadata: { namespace?: string; name: string; uid: string; labels?: unknown; creationTimestamp: string }; data?: unknown; spec?: unknown; type?: string }[] };
  const objects = new Map<string, string>();
  for (const o of doc.items) {
    const spec = o.kind === 'Namespace' ? undefined : o.spec;
    objects.set(`${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`, JSON.stringify({ uid: o.metadata.uid, created: o.metadata.creationTimestamp, labels: o.metadata.labels, data: o.data, spec, type: o.type }));
  }
  return objects;
}
