/**
 * deploy/ rendered for the tests that read it (deploy.test.ts, deploy-daemonset.test.ts): every
 * kustomization and combination by name, the workloads grouped by what they add, accessors for
 * the DaemonSet, its mounts and volumes, and the config its pod runs with, resolved as the
 * kubelet and the daemon would.
 */
import assert from 'node:assert/strict';
import { parse } from 'yaml';
import { Value } from '@sinclair/typebox/value';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IVolume } from 'kubernetes-models/v1/Volume';
import { ConfigSchema, FsStoreSchema } from '../../src/config/schema.ts';
import { applyEnvOverrides } from '../../src/config/load.ts';
import { COMBINATIONS, combinationName, kustomizations, render, renderCombination, type K8sObject, type Rendered } from './kustomize.ts';

export const byKind = (r: Rendered, kind: string) => r.objects.filter((o) => o.kind === kind);
export function one(r: Rendered, kind: string, name?: string): K8sObject {
  const found = byKind(r, kind).filter((o) => name === undefined || o.metadata.name === name);
  assert.equal(found.length, 1, `${r.dir}: expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
}
export const daemonSet = (r: Rendered) => one(r, 'DaemonSet', 'lifeboat') as unknown as Required<IDaemonSet> & K8sObject;
export const podSpec = (r: Rendered) => daemonSet(r).spec!.template.spec!;
export const mainContainer = (r: Rendered): IContainer => podSpec(r).containers.find((c) => c.name === 'lifeboat')!;

export const rendered = new Map<string, Rendered>();
export const r = (dir: string) => {
  const got = rendered.get(dir);
  assert.ok(got, `${dir} was not rendered`);
  return got;
};
/** One example per common install: base plus components. */
export const EXAMPLES = ['deploy/examples/local', 'deploy/examples/ceph-rgw-obc', 'deploy/examples/rgw-static', 'deploy/examples/kube-prometheus-stack'];
export const COMBOS = COMBINATIONS.map(combinationName);
/** Everything that runs the daemon: the install, the base, each example and each combination. */
export const WORKLOADS = ['deploy', 'deploy/base', ...EXAMPLES, ...COMBOS];
export const withComponent = (name: string) => COMBINATIONS.filter((c) => c.components.includes(name)).map(combinationName);
/** The workloads with the restore component, and the ones without. */
export const RESTORE = withComponent('restore');
export const WITHOUT_RESTORE = WORKLOADS.filter((d) => !RESTORE.includes(d));
export const DRILL = withComponent('drill');
/** The component with the Prometheus Operator's objects, and the workloads that use it. */
export const MONITORING_COMPONENT = 'deploy/components/prometheus-operator';
export const MONITORED = ['deploy/examples/kube-prometheus-stack', ...COMBOS.filter((d) => d.startsWith('deploy/examples/kube-prometheus-stack '))];
/** The workloads whose store is S3: the examples with a store component, and what builds on them. */
export const S3_STORE = WORKLOADS.filter((d) => /examples\/(ceph-rgw-obc|rgw-static)/.test(d));
/** The API groups Kubernetes itself serves that deploy/ uses; any other group needs a CRD. */
export const BUILT_IN_GROUPS = ['', 'apps', 'networking.k8s.io', 'rbac.authorization.k8s.io'];
export const group = (o: K8sObject) => (o.apiVersion.includes('/') ? o.apiVersion.split('/')[0]! : '');

/** Renders every kustomization and combination; call it in a test file's before(). */
export async function renderAll(): Promise<void> {
  for (const rd of await Promise.all([...kustomizations().map(render), ...COMBINATIONS.map(renderCombination)])) rendered.set(rd.dir, rd);
}


export const caps = (c: { securityContext?: IContainer['securityContext'] }) => ({
  add: [...(c.securityContext?.capabilities?.add ?? [])].sort(),
  drop: [...(c.securityContext?.capabilities?.drop ?? [])],
});
export const volumeOrUndefined = (rd: Rendered, name: string) => podSpec(rd).volumes?.find((x) => x.name === name);
export const volume = (rd: Rendered, name: string): IVolume => {
  const v = volumeOrUndefined(rd, name);
  assert.ok(v, `${rd.dir}: volume ${name}`);
  return v;
};
/** mountPath → { volume, readOnly } of a container. */
export function mounts(rd: Rendered, c: IContainer) {
  return (c.volumeMounts ?? []).map((m) => ({ path: m.mountPath, readOnly: m.readOnly === true, volume: volume(rd, m.name), subPath: m.subPath }));
}
/** The mount a container path lives on (the longest mountPath that contains it). */
export function mountOf(rd: Rendered, c: IContainer, file: string) {
  return mounts(rd, c)
    .filter((m) => file === m.path || file.startsWith(`${m.path}/`))
    .sort((a, b) => b.path.length - a.path.length)[0];
}

export type DaemonConfigShape = {
  metrics: { listen: { port: number } };
  api: { listen: { port: number }; tls: { certFile: string; keyFile: string; clientCaFile?: string }; tokensFile?: string };
  encryption: { recipientsFile?: string; identityFile?: string };
  signing: { keyFile?: string; publicKeyFiles: string[] };
  store: { fs?: { dir: string }; s3?: { accessKeyIdFile?: string; secretAccessKeyFile?: string; endpoint?: string; bucket?: string } };
  daemon: { stateDir: string; schedules: { drill: string } };
  drill: { scratchDir?: string };
  etcd: { tls: { caFile: string; certFile: string; keyFile: string } };
  kit: { hostRoot: string; kubernetesDir: string; clusterConfiguration: string; encryptionProviderConfig: string; extraFiles: { path: string; required: boolean }[] };
};

/** What Rook writes into the ConfigMap of an ObjectBucketClaim, as it looks on a real cluster. */
export const OBC_STAND_INS: Record<string, string> = {
  BUCKET_HOST: 'rook-ceph-rgw-my-store.rook-ceph.svc',
  BUCKET_PORT: '80',
  BUCKET_NAME: 'lifeboat-backups-5f1c2a7e-9b1d-4c1e-8f3a-2d6b7c8e9f01',
  BUCKET_REGION: 'us-east-1',
};
/** The names of the ObjectBucketClaims in a rendering: Rook writes a Secret and a ConfigMap of each name. */
export const claims = (rd: Rendered) => byKind(rd, 'ObjectBucketClaim').map((o) => o.metadata.name);

/**
 * The container's environment as the kubelet builds it: values from the rendered ConfigMaps, from
 * Rook's ConfigMap of a claim (stand-ins), the field references (stand-ins), and `$(VAR)` expanded
 * from the variables defined before it. A reference to anything else fails.
 */
export function containerEnv(rd: Rendered): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of mainContainer(rd).env ?? []) {
    const cmRef = e.valueFrom?.configMapKeyRef;
    let value: string;
    if (e.value !== undefined) {
      value = e.value.replace(/\$\((\w+)\)/g, (whole, name: string) => {
        assert.ok(name in env, `${rd.dir}: ${e.name} refers to $(${name}), which no earlier variable defines`);
        return env[name]!;
      });
    } else if (cmRef) {
      assert.ok(claims(rd).includes(cmRef.name!), `${rd.dir}: ${e.name} from ConfigMap ${cmRef.name}, which is no claim's`);
      value = OBC_STAND_INS[cmRef.key]!;
      assert.ok(value, `${rd.dir}: ${e.name}: Rook writes no key ${cmRef.key}`);
    } else if (e.valueFrom?.fieldRef) {
      value = { 'spec.nodeName': 'cp-1', 'status.hostIP': '10.0.0.11' }[e.valueFrom.fieldRef.fieldPath]!;
      assert.ok(value, `${rd.dir}: ${e.name}: field ${e.valueFrom.fieldRef.fieldPath}`);
    } else {
      assert.fail(`${rd.dir}: ${e.name} has a source this test does not resolve`);
    }
    env[e.name] = value;
  }
  return env;
}

/** The pod's config: its ConfigMap's config.yaml, the container's LIFEBOAT_* env applied, defaults filled, validated. */
export function daemonConfig(rd: Rendered): DaemonConfigShape {
  const configVolume = volume(rd, 'config');
  const cm = one(rd, 'ConfigMap', configVolume.configMap!.name) as unknown as { data: Record<string, string> };
  const doc = parse(cm.data['config.yaml']!) as Record<string, unknown>;
  const env = Object.fromEntries(Object.entries(containerEnv(rd)).filter(([k]) => k.startsWith('LIFEBOAT_')));
  applyEnvOverrides(doc, env);
  const input = Value.Default(ConfigSchema, structuredClone(doc)) as DaemonConfigShape;
  const first = Value.Errors(ConfigSchema, input).First();
  assert.equal(first, undefined, `${rd.dir}: config ${first?.path}: ${first?.message}`);
  assert.ok(!(input.store.fs && input.store.s3), `${rd.dir}: one store, fs or s3`);
  // No store configured is the directory store in its default directory (src/config/load.ts).
  if (!input.store.s3 && !input.store.fs) input.store.fs = Value.Default(FsStoreSchema, {}) as { dir: string };
  return input;
}

/** The Secret templates by name. */
export function templates(): Map<string, K8sObject & { stringData?: Record<string, string>; data?: Record<string, string>; type?: string }> {
  return new Map(byKind(r('deploy/secrets'), 'Secret').map((s) => [s.metadata.name, s]));
}

