/**
 * The shipping artefacts in deploy/: the Kustomize base, the components, the examples that combine
 * them, the Secret templates. The apiserver's view of deploy/ is deploy-server.test.ts; the image's
 * is image.test.ts.
 *
 * - Every kustomization, and each combination of an example with the restore and drill
 *   components, renders with the real `kubectl kustomize` (the pinned build,
 *   scripts/rig/binaries.ts), printing no warning.
 * - Every rendered object passes the Kubernetes OpenAPI schemas (kubernetes-models and
 *   @kubernetes-models/prometheus-operator: types, formats, required fields), and has no field
 *   the schema does not know (the same models' TypeScript types, checked by the compiler).
 * - The security-critical fields, the probes and resources, the mounts each config path needs.
 *
 * That the DaemonSet's securityContext (uid 0, no capability) can back up a root-only kit is
 * shown on the real kernel by backup-no-capabilities.test.ts.
 */
import { test, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ts from 'typescript';
import { parse } from 'yaml';
import { Value } from '@sinclair/typebox/value';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { PrometheusRule } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { AlertmanagerConfig } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1alpha1/AlertmanagerConfig';
import type { IContainer } from 'kubernetes-models/v1/Container';
import type { IDaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import type { IVolume } from 'kubernetes-models/v1/Volume';
import { ConfigSchema, FsStoreSchema } from '../../src/config/schema.ts';
import { applyEnvOverrides } from '../../src/config/load.ts';
import { makeKubeadmTree } from '../../scripts/rig/pki.ts';
import { kitSpecs } from '../../src/kit/collect.ts';
import { COMBINATIONS, combinationName, components, DEPLOY, kustomizations, render, renderCombination, type K8sObject, type Rendered } from '../support/kustomize.ts';
import { REPO } from '../support/lifeboat.ts';

const PKG = JSON.parse(readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string };

/** Measured (README.md, shared notes): a backup peaks at about 150 MiB RSS, an S3 backup at 200 MiB. */
const MEASURED_BACKUP_PEAK_MIB = 150;
const S3_BOUND_MIB = 200;
const IMAGE = 'ghcr.io/lifeboat-backup/lifeboat';

// ---------------------------------------------------------------------------------------------
// Rendering (test/support/kustomize.ts)

const byKind = (r: Rendered, kind: string) => r.objects.filter((o) => o.kind === kind);
function one(r: Rendered, kind: string, name?: string): K8sObject {
  const found = byKind(r, kind).filter((o) => name === undefined || o.metadata.name === name);
  assert.equal(found.length, 1, `${r.dir}: expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0]!;
}
const daemonSet = (r: Rendered) => one(r, 'DaemonSet', 'lifeboat') as unknown as Required<IDaemonSet> & K8sObject;
const podSpec = (r: Rendered) => daemonSet(r).spec!.template.spec!;
const mainContainer = (r: Rendered): IContainer => podSpec(r).containers.find((c) => c.name === 'lifeboat')!;

const rendered = new Map<string, Rendered>();
const r = (dir: string) => {
  const got = rendered.get(dir);
  assert.ok(got, `${dir} was not rendered`);
  return got;
};
/** One example per common install: base plus components. */
const EXAMPLES = ['deploy/examples/local', 'deploy/examples/ceph-rgw-obc', 'deploy/examples/rgw-static', 'deploy/examples/kube-prometheus-stack'];
const COMBOS = COMBINATIONS.map(combinationName);
/** Everything that runs the daemon: the install, the base, each example and each combination. */
const WORKLOADS = ['deploy', 'deploy/base', ...EXAMPLES, ...COMBOS];
const withComponent = (name: string) => COMBINATIONS.filter((c) => c.components.includes(name)).map(combinationName);
/** The workloads with the restore component, and the ones without. */
const RESTORE = withComponent('restore');
const NON_ROOT = WORKLOADS.filter((d) => !RESTORE.includes(d));
const DRILL = withComponent('drill');
/** The component with the Prometheus Operator's objects, and the workloads that use it. */
const MONITORING_COMPONENT = 'deploy/components/prometheus-operator';
const MONITORED = ['deploy/examples/kube-prometheus-stack', ...COMBOS.filter((d) => d.startsWith('deploy/examples/kube-prometheus-stack '))];
/** The workloads whose store is S3: the examples with a store component, and what builds on them. */
const S3_STORE = WORKLOADS.filter((d) => /examples\/(ceph-rgw-obc|rgw-static)/.test(d));
/** The API groups Kubernetes itself serves that deploy/ uses; any other group needs a CRD. */
const BUILT_IN_GROUPS = ['', 'apps', 'networking.k8s.io', 'rbac.authorization.k8s.io'];
const group = (o: K8sObject) => (o.apiVersion.includes('/') ? o.apiVersion.split('/')[0]! : '');

before(async () => {
  for (const rd of await Promise.all([...kustomizations().map(render), ...COMBINATIONS.map(renderCombination)])) rendered.set(rd.dir, rd);
});

// ---------------------------------------------------------------------------------------------
// Schema validation

/** The kinds deploy/ may contain, each with its OpenAPI model and the TypeScript type of it. */
const MODELS: Record<string, { validate: (o: K8sObject) => void; module: string; type: string }> = {
  'v1/Namespace': { validate: (o) => new Namespace(o as never).validate(), module: 'kubernetes-models/v1/Namespace', type: 'INamespace' },
  'v1/ServiceAccount': { validate: (o) => new ServiceAccount(o as never).validate(), module: 'kubernetes-models/v1/ServiceAccount', type: 'IServiceAccount' },
  'v1/ConfigMap': { validate: (o) => new ConfigMap(o as never).validate(), module: 'kubernetes-models/v1/ConfigMap', type: 'IConfigMap' },
  'v1/Secret': { validate: (o) => new Secret(o as never).validate(), module: 'kubernetes-models/v1/Secret', type: 'ISecret' },
  'v1/Service': { validate: (o) => new Service(o as never).validate(), module: 'kubernetes-models/v1/Service', type: 'IService' },
  'apps/v1/DaemonSet': { validate: (o) => new DaemonSet(o as never).validate(), module: 'kubernetes-models/apps/v1/DaemonSet', type: 'IDaemonSet' },
  'networking.k8s.io/v1/NetworkPolicy': { validate: (o) => new NetworkPolicy(o as never).validate(), module: 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy', type: 'INetworkPolicy' },
  'rbac.authorization.k8s.io/v1/ClusterRole': { validate: (o) => new ClusterRole(o as never).validate(), module: 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole', type: 'IClusterRole' },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': { validate: (o) => new ClusterRoleBinding(o as never).validate(), module: 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding', type: 'IClusterRoleBinding' },
  'monitoring.coreos.com/v1/PrometheusRule': { validate: (o) => new PrometheusRule(o as never).validate(), module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule', type: 'IPrometheusRule' },
  'monitoring.coreos.com/v1/ServiceMonitor': { validate: (o) => new ServiceMonitor(o as never).validate(), module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor', type: 'IServiceMonitor' },
  // Only the example deploy/prometheus/alertmanagerconfig.yaml, which no kustomization renders.
  'monitoring.coreos.com/v1alpha1/AlertmanagerConfig': { validate: (o) => new AlertmanagerConfig(o as never).validate(), module: '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1alpha1/AlertmanagerConfig', type: 'IAlertmanagerConfig' },
};

/**
 * Rook publishes no schema package. The fields of the ObjectBucketClaim CRD
 * (objectbucket.io/v1alpha1) that the ceph-rgw component may use, and what it must set; anything
 * else is a typo.
 */
function checkObjectBucketClaim(o: K8sObject): void {
  assert.equal(o.apiVersion, 'objectbucket.io/v1alpha1');
  assert.deepEqual(Object.keys(o).sort(), ['apiVersion', 'kind', 'metadata', 'spec']);
  const spec = o.spec as Record<string, unknown>;
  const known = ['storageClassName', 'bucketName', 'generateBucketName', 'objectBucketName', 'additionalConfig'];
  for (const k of Object.keys(spec)) assert.ok(known.includes(k), `ObjectBucketClaim spec.${k} is not a field of the CRD`);
  assert.equal(typeof spec.storageClassName, 'string', 'spec.storageClassName (the bucket provisioner) is required');
  assert.equal([spec.bucketName, spec.generateBucketName].filter((x) => typeof x === 'string').length, 1, 'one of spec.bucketName and spec.generateBucketName');
}

/**
 * Unknown fields: the OpenAPI models do not reject them, so every object is also checked by the
 * TypeScript compiler against the same models' interfaces, as an object literal (excess property
 * checks reach every nested object and array element).
 */
function unknownFieldErrors(objects: { label: string; object: K8sObject }[]): string[] {
  const file = path.join(REPO, 'test/integration/deploy-objects.generated.ts');
  const aliases = new Map<string, string>();
  const header: string[] = [];
  const body: string[] = [];
  const ranges: { start: number; label: string }[] = [];
  for (const { label, object } of objects) {
    const model = MODELS[`${object.apiVersion}/${object.kind}`];
    if (!model) continue;
    let alias = aliases.get(model.module);
    if (alias === undefined) {
      alias = `T${aliases.size}`;
      aliases.set(model.module, alias);
      header.push(`import type { ${model.type} as ${alias} } from '${model.module}';`);
    }
    ranges.push({ start: body.length, label });
    body.push(...`export const o${ranges.length}: ${alias} = ${JSON.stringify(object, null, 1)};`.split('\n'));
  }
  const source = [...header, ...body].join('\n');
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
  };
  const host = ts.createCompilerHost(options);
  const { fileExists, readFile: read, getSourceFile } = host;
  host.fileExists = (f) => f === file || fileExists.call(host, f);
  host.readFile = (f) => (f === file ? source : read.call(host, f));
  host.getSourceFile = (f, lang, ...rest) => (f === file ? ts.createSourceFile(f, source, lang) : getSourceFile.call(host, f, lang, ...rest));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program, program.getSourceFile(file)).map((d) => {
    const line = d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start).line - header.length : -1;
    const owner = ranges.findLast((x) => x.start <= line)?.label ?? '(imports)';
    return `${owner}: ${ts.flattenDiagnosticMessageText(d.messageText, '; ')}`;
  });
}

describe('kustomize', () => {
  test('the install, the base, every example, combination and the Secret templates render; every component is used', () => {
    const dirs = kustomizations();
    for (const expected of ['deploy', 'deploy/base', 'deploy/secrets', ...EXAMPLES]) assert.ok(dirs.includes(expected), `${expected}/kustomization.yaml`);
    for (const dir of [...dirs, ...COMBOS]) assert.ok(r(dir).objects.length > 0, `${dir} rendered nothing`);
    // deploy/ is the base, and so is the local example.
    assert.deepEqual(r('deploy').objects, r('deploy/base').objects);
    assert.deepEqual(r('deploy/examples/local').objects, r('deploy/base').objects);
    const names = components().map((c) => path.basename(c)).sort();
    assert.deepEqual(names, ['ceph-rgw', 'drill', 'grafana', 'prometheus-operator', 'restore', 's3']);
    for (const dir of components()) {
      assert.ok(dir.startsWith('deploy/components/'), `${dir}: components live in deploy/components/`);
      const used = [...EXAMPLES.map((e) => parse(readFileSync(path.join(REPO, e, 'kustomization.yaml'), 'utf8')) as { components?: string[] }).flatMap((k) => k.components ?? []).map((c) => path.basename(c)), ...COMBINATIONS.flatMap((c) => c.components)];
      assert.ok(used.includes(path.basename(dir)), `${dir} is used by no example and no combination the tests render`);
    }
  });

  test('the base holds only built-in kinds; what needs a CRD comes only through a component', () => {
    // `kubectl apply -k deploy/` must work on a stock kubeadm cluster, which has no CRDs.
    for (const dir of ['deploy', 'deploy/base', 'deploy/secrets', 'deploy/grafana', 'deploy/examples/local', 'deploy/examples/rgw-static', ...COMBOS.filter((d) => /examples\/(local|rgw-static) /.test(d))]) {
      const crdKinds = r(dir).objects.filter((o) => !BUILT_IN_GROUPS.includes(group(o))).map((o) => `${o.apiVersion} ${o.kind}`);
      assert.deepEqual(crdKinds, [], `${dir} needs no CRD`);
    }
    for (const dir of MONITORED) {
      assert.deepEqual(r(dir).objects.filter((o) => group(o) === 'monitoring.coreos.com').map((o) => o.kind).sort(), ['PrometheusRule', 'ServiceMonitor'], dir);
    }
    for (const [dir, { objects }] of rendered) {
      if (['deploy/prometheus', ...MONITORED].includes(dir)) continue;
      assert.deepEqual(objects.filter((o) => group(o) === 'monitoring.coreos.com'), [], `${dir}: monitoring.coreos.com objects only through ${MONITORING_COMPONENT}`);
    }
    for (const [dir, { objects }] of rendered) {
      const claims = objects.filter((o) => group(o) === 'objectbucket.io').map((o) => o.kind);
      assert.deepEqual(claims, dir.startsWith('deploy/examples/ceph-rgw-obc') ? ['ObjectBucketClaim'] : [], `${dir}: the ObjectBucketClaim only through deploy/components/ceph-rgw`);
    }
    // The monitoring example is the base plus the component's objects and the dashboard, nothing else.
    const plain = r('deploy/examples/kube-prometheus-stack').objects.filter((o) => group(o) !== 'monitoring.coreos.com' && o.metadata.name !== 'lifeboat-dashboard');
    assert.deepEqual(plain, r('deploy/base').objects);
    // No kustomization or component uses the fields kustomize has deprecated.
    for (const dir of [...kustomizations(), ...components()]) {
      const k = parse(readFileSync(path.join(REPO, dir, 'kustomization.yaml'), 'utf8')) as Record<string, unknown>;
      for (const field of ['bases', 'patchesStrategicMerge', 'patchesJson6902', 'commonLabels', 'vars']) assert.equal(k[field], undefined, `${dir}: ${field} is deprecated`);
    }
  });

  test('a component adds to any install: restore on an RGW install keeps the RGW store', () => {
    // With overlays, the restore overlay built on the base and dropped the store of the install.
    for (const dir of COMBOS) {
      const c = COMBINATIONS.find((x) => combinationName(x) === dir)!;
      const store = (rd: Rendered) => {
        const cfg = daemonConfig(rd);
        return cfg.store.s3 ? { s3: { ...cfg.store.s3 } } : { fs: cfg.store.fs };
      };
      assert.deepEqual(store(r(dir)), store(r(c.base)), `${dir}: the store of ${c.base}`);
      const kinds = (rd: Rendered) => rd.objects.map((o) => `${o.kind}/${o.metadata.name}`).filter((k) => !k.startsWith('ClusterRole'));
      assert.deepEqual(kinds(r(dir)), kinds(r(c.base)), `${dir}: every object of ${c.base}, and only the restore component's RBAC besides`);
    }
    assert.equal(daemonConfig(r('deploy/examples/ceph-rgw-obc + restore')).store.s3?.bucket, OBC_STAND_INS.BUCKET_NAME);
  });

  test('every rendered object passes the Kubernetes OpenAPI schema and has no unknown field', () => {
    const all: { label: string; object: K8sObject }[] = [];
    for (const [dir, { objects }] of rendered) {
      for (const object of objects) {
        const label = `${dir}: ${object.kind}/${object.metadata?.name}`;
        if (object.kind === 'ObjectBucketClaim') {
          checkObjectBucketClaim(object);
          continue;
        }
        const model = MODELS[`${object.apiVersion}/${object.kind}`];
        assert.ok(model, `${label}: no schema for ${object.apiVersion} ${object.kind}; add its model to MODELS`);
        assert.doesNotThrow(() => model.validate(object), (err: Error) => assert.fail(`${label}: ${err.message}`));
        all.push({ label, object });
      }
    }
    assert.deepEqual(unknownFieldErrors(all), []);
  });

  test('the schema checks catch a misspelt field, a wrong type and a bad quantity', () => {
    const ds = structuredClone(daemonSet(r('deploy')));
    const c = ds.spec!.template.spec!.containers[0] as unknown as Record<string, unknown>;
    c.volumeMount = c.volumeMounts;
    const errors = unknownFieldErrors([{ label: 'mutant', object: ds }]);
    assert.equal(errors.length, 1, errors.join('\n'));
    assert.match(errors[0]!, /mutant: .*'"?volumeMount"?' does not exist in type 'IContainer'/);
    const typed = structuredClone(daemonSet(r('deploy')));
    (typed.spec!.template.spec as unknown as Record<string, unknown>).hostNetwork = 'yes';
    assert.throws(() => MODELS['apps/v1/DaemonSet']!.validate(typed), /hostNetwork must be boolean/);
    const quantity = structuredClone(daemonSet(r('deploy')));
    quantity.spec!.template.spec!.containers[0]!.resources!.limits!.memory = '512 MiB';
    assert.throws(() => MODELS['apps/v1/DaemonSet']!.validate(quantity), /quantity/);
  });

  test('every namespaced object is in the lifeboat namespace, with the same labels', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
    for (const [dir, { objects }] of rendered) {
      // deploy/prometheus only lets the component include the PrometheusRule; the component sets the namespace.
      if (dir === 'deploy/prometheus') continue;
      for (const o of objects) {
        if (!clusterScoped.has(o.kind)) assert.equal(o.metadata.namespace, 'lifeboat', `${dir}: ${o.kind}/${o.metadata.name}`);
        assert.equal(o.metadata.labels?.['app.kubernetes.io/name'], 'lifeboat', `${dir}: ${o.kind}/${o.metadata.name} labels`);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Security-critical fields

const caps = (c: { securityContext?: IContainer['securityContext'] }) => ({
  add: [...(c.securityContext?.capabilities?.add ?? [])].sort(),
  drop: [...(c.securityContext?.capabilities?.drop ?? [])],
});
const volumeOrUndefined = (rd: Rendered, name: string) => podSpec(rd).volumes?.find((x) => x.name === name);
const volume = (rd: Rendered, name: string): IVolume => {
  const v = volumeOrUndefined(rd, name);
  assert.ok(v, `${rd.dir}: volume ${name}`);
  return v;
};
/** mountPath → { volume, readOnly } of a container. */
function mounts(rd: Rendered, c: IContainer) {
  return (c.volumeMounts ?? []).map((m) => ({ path: m.mountPath, readOnly: m.readOnly === true, volume: volume(rd, m.name), subPath: m.subPath }));
}
/** The mount a container path lives on (the longest mountPath that contains it). */
function mountOf(rd: Rendered, c: IContainer, file: string) {
  return mounts(rd, c)
    .filter((m) => file === m.path || file.startsWith(`${m.path}/`))
    .sort((a, b) => b.path.length - a.path.length)[0];
}

describe('the backup DaemonSet', () => {

  test('runs on every control-plane node, on the host network, with the taints tolerated', () => {
    for (const dir of WORKLOADS) {
      const spec = podSpec(r(dir));
      assert.deepEqual(spec.nodeSelector, { 'node-role.kubernetes.io/control-plane': '' }, dir);
      for (const key of ['node-role.kubernetes.io/control-plane', 'node-role.kubernetes.io/master']) {
        assert.ok(
          spec.tolerations?.some((t) => t.key === key && t.operator === 'Exists' && t.effect === 'NoSchedule'),
          `${dir}: tolerates ${key}:NoSchedule`,
        );
      }
      assert.equal(spec.hostNetwork, true, `${dir}: hostNetwork, for etcd on 127.0.0.1:2379`);
      assert.equal(spec.dnsPolicy, 'ClusterFirstWithHostNet', dir);
    }
  });

  test('runs as uid 0 with no capability: none added, ALL dropped, no escalation, seccomp, read-only root filesystem, priority', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const pod = podSpec(rd);
      assert.equal(pod.securityContext?.runAsUser, 0, dir);
      assert.equal(pod.securityContext?.runAsNonRoot, false, dir);
      assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', dir);
      assert.equal(pod.securityContext?.fsGroup, undefined, `${dir}: root owns the Secret files; no group needed`);
      assert.equal(pod.priorityClassName, 'system-node-critical', dir);
      assert.deepEqual(pod.initContainers ?? [], [], `${dir}: no init container`);
      assert.equal(pod.containers.length, 1, `${dir}: one container`);
      const c = mainContainer(rd);
      const sc = c.securityContext!;
      assert.equal(sc.runAsUser, 0, dir);
      assert.equal(sc.runAsGroup, 0, dir);
      assert.equal(sc.runAsNonRoot, false, dir);
      assert.equal(sc.privileged, false, dir);
      assert.equal(sc.allowPrivilegeEscalation, false, dir);
      assert.equal(sc.readOnlyRootFilesystem, true, dir);
      assert.equal(sc.seccompProfile?.type, 'RuntimeDefault', dir);
      assert.deepEqual(caps(c), { add: [], drop: ['ALL'] }, dir);
      assert.equal(sc.procMount, undefined, dir);
      // The image's ENTRYPOINT (the Dockerfile test checks it) is what runs: plain node.
      assert.equal(c.command, undefined, dir);
    }
  });

  test('mounts read-only only what the kit and etcd need, never a kubeconfig; writes only its own directory and /tmp', async () => {
    // The kit of a kubeadm node as the config names it: every file and directory a backup reads.
    const root = await mkdtemp(path.join(tmpdir(), 'lifeboat-it-kit-'));
    try {
      await makeKubeadmTree(path.join(root, 'etc/kubernetes'), { hosts: ['m1'] });
      for (const dir of WORKLOADS) {
        const rd = r(dir);
        const c = mainContainer(rd);
        const m = mounts(rd, c);
        const config = daemonConfig(rd);
        const specs = await kitSpecs({ ...config.kit, hostRoot: root } as Parameters<typeof kitSpecs>[0]);
        const needed = [...specs.map((x) => x.path), '/etc/kubernetes/manifests/kube-apiserver.yaml', config.etcd.tls.caFile, config.etcd.tls.certFile, config.etcd.tls.keyFile];
        assert.ok(needed.includes('/etc/kubernetes/enc/enc.yaml'), 'the encryption-provider config the apiserver manifest names');
        for (const f of needed.filter((x) => x !== config.kit.clusterConfiguration)) {
          const on = mountOf(rd, c, f);
          assert.ok(on?.volume.hostPath, `${dir}: ${f} is on no host mount`);
          assert.equal(path.posix.relative(on.path, f), path.posix.relative(on.volume.hostPath.path, f), `${dir}: ${f} at its host path`);
          if (!RESTORE.includes(dir)) assert.equal(on.readOnly, true, `${dir}: ${f} read-only`);
        }
        // kubeadm's kubeconfigs hold cluster-admin (admin.conf, super-admin.conf) or node
        // credentials: no mount reaches them, nor /etc/kubernetes as a whole.
        for (const f of ['admin.conf', 'super-admin.conf', 'kubelet.conf', 'controller-manager.conf', 'scheduler.conf']) {
          assert.equal(mountOf(rd, c, `/etc/kubernetes/${f}`), undefined, `${dir}: /etc/kubernetes/${f} is mounted`);
        }
        const hostPaths = (podSpec(rd).volumes ?? []).filter((v) => v.hostPath).map((v) => v.hostPath!.path).sort();
        const restorePaths = RESTORE.includes(dir) ? ['/var/lib/etcd'] : [];
        assert.deepEqual(hostPaths, ['/etc/kubernetes/enc', '/etc/kubernetes/manifests', '/etc/kubernetes/pki', ...restorePaths, '/var/lib/lifeboat'].sort(), `${dir}: hostPath volumes`);
        const writable = m.filter((x) => !x.readOnly).map((x) => x.path).sort();
        const expected = ['/tmp', '/var/lib/lifeboat'];
        if (DRILL.includes(dir)) expected.push('/var/lib/lifeboat-drill');
        if (RESTORE.includes(dir)) expected.push('/etc/kubernetes/manifests', '/var/lib/etcd');
        assert.deepEqual(writable, expected.sort(), `${dir}: writable mounts`);
        for (const x of m.filter((y) => y.volume.secret)) assert.equal(x.readOnly, true, `${dir}: Secret at ${x.path} read-only`);
        for (const x of m.filter((y) => !y.readOnly)) {
          if (x.volume.emptyDir) assert.ok(x.volume.emptyDir.sizeLimit, `${dir}: emptyDir ${x.path} has a sizeLimit`);
        }
        // Secret files: root's, 0400.
        for (const v of (podSpec(rd).volumes ?? []).filter((y) => y.secret)) assert.equal(v.secret!.defaultMode, 0o400, `${dir}: ${v.name} mode`);
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  test('has no Kubernetes API access: no token, no RBAC', () => {
    for (const dir of NON_ROOT) {
      const rd = r(dir);
      assert.equal(podSpec(rd).automountServiceAccountToken, false, dir);
      assert.equal(podSpec(rd).serviceAccountName, 'lifeboat', dir);
      assert.equal(one(rd, 'ServiceAccount', 'lifeboat').automountServiceAccountToken, false, dir);
      for (const kind of ['Role', 'RoleBinding', 'ClusterRole', 'ClusterRoleBinding']) assert.deepEqual(byKind(rd, kind), [], `${dir}: no ${kind}`);
    }
  });

  test('probes /healthz and /readyz on the metrics port, which is metrics.listen', () => {
    for (const dir of WORKLOADS) {
      const c = mainContainer(r(dir));
      const port = (name: string) => c.ports?.find((p) => p.name === name)?.containerPort;
      assert.equal(port('metrics'), 9464, dir);
      assert.equal(port('https'), 8443, dir);
      assert.deepEqual(c.startupProbe?.httpGet, { path: '/healthz', port: 'metrics' }, dir);
      assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'metrics' }, dir);
      assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'metrics' }, dir);
      const config = daemonConfig(r(dir));
      assert.equal(config.metrics.listen.port, port('metrics'), `${dir}: metrics.listen.port`);
      assert.equal(config.api.listen.port, port('https'), `${dir}: api.listen.port`);
    }
  });

  test('requests the measured peak memory, and limits it', () => {
    for (const dir of WORKLOADS) {
      const res = mainContainer(r(dir)).resources!;
      const request = mib(res.requests!.memory!);
      const limit = mib(res.limits!.memory!);
      assert.ok(request >= S3_BOUND_MIB, `${dir}: memory request ${request} MiB covers the ${S3_BOUND_MIB} MiB S3 peak`);
      assert.ok(request <= 2 * S3_BOUND_MIB, `${dir}: memory request ${request} MiB is not far above the measured peak`);
      assert.ok(limit >= 2 * MEASURED_BACKUP_PEAK_MIB && limit >= request, `${dir}: memory limit ${limit} MiB`);
      if (DRILL.includes(dir)) assert.ok(limit >= 2048 + 512, `${dir}: room for the throwaway etcd`);
      else assert.ok(limit <= 1024, `${dir}: the memory bound is a product claim; the limit holds it (${limit} MiB)`);
      assert.ok(res.requests!.cpu, `${dir}: a CPU request`);
      assert.ok(res.limits!.cpu, `${dir}: a CPU limit keeps a backup from taking every core from etcd`);
    }
  });

  test('runs the image of this version, and serves the config of its ConfigMap', () => {
    for (const dir of WORKLOADS) {
      const spec = podSpec(r(dir));
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) assert.equal(c.image, `${IMAGE}:${PKG.version}`, `${dir}: ${c.name}`);
      const c = mainContainer(r(dir));
      assert.deepEqual(c.args, ['serve', '--config', '/etc/lifeboat/config.yaml'], dir);
      assert.ok(c.env?.some((e) => e.name === 'LIFEBOAT_NODE' && e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName'), `${dir}: node name`);
    }
  });
});

function mib(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?$/.exec(String(q));
  assert.ok(m, `quantity ${q}`);
  const n = Number(m[1]);
  const unit = { Ki: 1 / 1024, Mi: 1, Gi: 1024, k: 1000 / 2 ** 20, M: 1e6 / 2 ** 20, G: 1e9 / 2 ** 20 }[m[2] ?? ''] ?? 1 / 2 ** 20;
  return n * unit;
}

// ---------------------------------------------------------------------------------------------
// The config the pod runs with

type DaemonConfigShape = {
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
const OBC_STAND_INS: Record<string, string> = {
  BUCKET_HOST: 'rook-ceph-rgw-my-store.rook-ceph.svc',
  BUCKET_PORT: '80',
  BUCKET_NAME: 'lifeboat-backups-5f1c2a7e-9b1d-4c1e-8f3a-2d6b7c8e9f01',
  BUCKET_REGION: 'us-east-1',
};
/** The names of the ObjectBucketClaims in a rendering: Rook writes a Secret and a ConfigMap of each name. */
const claims = (rd: Rendered) => byKind(rd, 'ObjectBucketClaim').map((o) => o.metadata.name);

/**
 * The container's environment as the kubelet builds it: values from the rendered ConfigMaps, from
 * Rook's ConfigMap of a claim (stand-ins), the field references (stand-ins), and `$(VAR)` expanded
 * from the variables defined before it. A reference to anything else fails.
 */
function containerEnv(rd: Rendered): Record<string, string> {
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
function daemonConfig(rd: Rendered): DaemonConfigShape {
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
function templates(): Map<string, K8sObject & { stringData?: Record<string, string>; data?: Record<string, string>; type?: string }> {
  return new Map(byKind(r('deploy/secrets'), 'Secret').map((s) => [s.metadata.name, s]));
}

describe('config and mounts', () => {
  test('every file the config names is mounted: a Secret key, or a host path', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const config = daemonConfig(rd);
      const c = mainContainer(rd);
      const files: [string, string | undefined][] = [
        ['encryption.recipientsFile', config.encryption.recipientsFile],
        ['encryption.identityFile', config.encryption.identityFile],
        ['signing.keyFile', config.signing.keyFile],
        ...config.signing.publicKeyFiles.map((f, i): [string, string] => [`signing.publicKeyFiles.${i}`, f]),
        ['api.tls.certFile', config.api.tls.certFile],
        ['api.tls.keyFile', config.api.tls.keyFile],
        ['api.tls.clientCaFile', config.api.tls.clientCaFile],
        ['api.tokensFile', config.api.tokensFile],
        ['store.s3.accessKeyIdFile', config.store.s3?.accessKeyIdFile],
        ['store.s3.secretAccessKeyFile', config.store.s3?.secretAccessKeyFile],
        ['etcd.tls.caFile', config.etcd.tls.caFile],
        ['etcd.tls.certFile', config.etcd.tls.certFile],
        ['etcd.tls.keyFile', config.etcd.tls.keyFile],
      ];
      assert.ok(config.encryption.recipientsFile && config.api.tokensFile && config.signing.keyFile, `${dir}: recipients, tokens and the signing key are configured`);
      for (const [field, file] of files) {
        if (file === undefined) continue;
        const m = mountOf(rd, c, file);
        assert.ok(m, `${dir}: ${field} ${file} is on no mount`);
        assert.equal(m.readOnly, true, `${dir}: ${field} is on a read-only mount`);
        if (m.volume.hostPath) {
          assert.ok(m.volume.hostPath.path.startsWith('/etc/kubernetes/'), `${dir}: ${field}`);
          continue;
        }
        const secret = m.volume.secret;
        assert.ok(secret, `${dir}: ${field} comes from a Secret`);
        assert.notEqual(secret.optional, true, `${dir}: ${field} is configured, so its Secret is not optional`);
        const rel = path.posix.relative(m.path, file);
        const key = secret.items ? secret.items.find((i) => i.path === rel)?.key : rel;
        assert.ok(key, `${dir}: ${field}: no item of ${secret.secretName} becomes ${rel}`);
        if (claims(rd).includes(secret.secretName!)) {
          assert.ok(['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'].includes(key), `${dir}: ${field} from Rook's key ${key}`);
        } else {
          const t = templates().get(secret.secretName!);
          assert.ok(t, `${dir}: ${field}: deploy/secrets/ has no template of ${secret.secretName}`);
          assert.ok(Object.keys({ ...t.data, ...t.stringData }).includes(key), `${dir}: ${field}: the template of ${secret.secretName} has no key ${key}`);
        }
      }
    }
  });

  test('state and the directory store are on the host, so they outlive the pod', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const config = daemonConfig(rd);
      for (const [field, p] of [['daemon.stateDir', config.daemon.stateDir], ['store.fs.dir', config.store.fs?.dir]] as const) {
        if (p === undefined) continue;
        const m = mountOf(rd, mainContainer(rd), p);
        assert.equal(m?.volume.hostPath?.path, '/var/lib/lifeboat', `${dir}: ${field} ${p} on the host`);
        assert.equal(m?.readOnly, false, `${dir}: ${field} writable`);
      }
    }
  });

  test('every Secret the pod mounts has a template, and the templates hold no key', () => {
    const t = templates();
    for (const dir of WORKLOADS) {
      for (const v of (podSpec(r(dir)).volumes ?? []).filter((x) => x.secret)) {
        if (claims(r(dir)).includes(v.secret!.secretName!)) continue;
        assert.ok(t.has(v.secret!.secretName!), `${dir}: template for ${v.secret!.secretName}`);
      }
    }
    for (const [name, s] of t) {
      const values = Object.values({ ...s.stringData });
      assert.ok(values.length > 0 && s.data === undefined, `${name}: stringData placeholders only`);
      for (const v of values) {
        assert.doesNotMatch(v, /^age1[0-9a-z]{20,}|AGE-SECRET-KEY-1|BEGIN [A-Z ]*PRIVATE KEY-----\n[A-Za-z0-9+/]{20}|sha256:[0-9a-f]{64}/m, `${name} holds a real-looking key`);
      }
    }
    assert.equal(t.get('lifeboat-api-tls')?.type, 'kubernetes.io/tls');
  });

  test('the base names no store, so the directory store; the store components set store.s3, from Rook\'s claim or lifeboat-s3', () => {
    const base = parse(readFileSync(path.join(DEPLOY, 'base/config.yaml'), 'utf8')) as Record<string, unknown>;
    assert.equal(base.store, undefined, 'a store in the file would clash with the components\' store.s3');
    for (const dir of WORKLOADS) {
      const config = daemonConfig(r(dir));
      if (!S3_STORE.includes(dir)) {
        assert.deepEqual(config.store, { fs: { dir: '/var/lib/lifeboat/backups' } }, dir);
        assert.equal(volumeOrUndefined(r(dir), 's3-credentials'), undefined, `${dir}: no S3 credentials without an S3 store`);
        continue;
      }
      assert.equal(config.store.fs, undefined, dir);
      assert.ok(config.store.s3?.endpoint && config.store.s3.bucket, `${dir}: endpoint and bucket`);
      const secret = volume(r(dir), 's3-credentials').secret!;
      if (dir.startsWith('deploy/examples/ceph-rgw-obc')) {
        // Everything from what Rook writes for the claim, under the claim's name.
        const [claim] = claims(r(dir));
        assert.equal(secret.secretName, claim, dir);
        assert.notEqual(secret.optional, true, dir);
        assert.equal(config.store.s3.endpoint, `http://${OBC_STAND_INS.BUCKET_HOST}:${OBC_STAND_INS.BUCKET_PORT}`, dir);
        assert.equal(config.store.s3.bucket, OBC_STAND_INS.BUCKET_NAME, dir);
      } else {
        assert.equal(secret.secretName, 'lifeboat-s3', dir);
        assert.equal(config.store.s3.endpoint, 'https://rgw.example.internal', dir);
      }
    }
  });
});

// ---------------------------------------------------------------------------------------------
// The restore and drill components

describe('the restore component', () => {
  test('adds write mounts of etcd\'s data dir and the static pod manifests, the identity read-only, and no capability', () => {
    assert.ok(RESTORE.length >= 3, RESTORE.join(', '));
    for (const dir of RESTORE) {
      const rd = r(dir);
      const m = mounts(rd, mainContainer(rd));
      const hostWritable = m.filter((x) => !x.readOnly && x.volume.hostPath).map((x) => [x.path, x.volume.hostPath!.path]).sort();
      assert.deepEqual(hostWritable, [
        ['/etc/kubernetes/manifests', '/etc/kubernetes/manifests'],
        ['/var/lib/etcd', '/var/lib/etcd'],
        ['/var/lib/lifeboat', '/var/lib/lifeboat'],
      ], dir);
      assert.equal(m.find((x) => x.path === '/etc/kubernetes/pki')?.readOnly, true, `${dir}: the PKI stays read-only`);
      const identity = m.find((x) => x.path === '/etc/lifeboat/identity')!;
      assert.equal(identity.readOnly, true, dir);
      assert.equal(identity.volume.secret?.secretName, 'lifeboat-identity', dir);
      assert.equal(daemonConfig(rd).encryption.identityFile, '/etc/lifeboat/identity/identity.txt', dir);
      // Root owns everything a restore writes, so the base's securityContext is all it needs.
      assert.deepEqual(mainContainer(rd).securityContext, mainContainer(r(COMBINATIONS.find((c) => combinationName(c) === dir)!.base)).securityContext, dir);
    }
    // Only the restore component writes to the host outside Lifeboat's own directory.
    for (const dir of NON_ROOT) {
      const rd = r(dir);
      const hostWritable = mounts(rd, mainContainer(rd)).filter((x) => !x.readOnly && x.volume.hostPath).map((x) => x.path);
      assert.deepEqual(hostWritable, ['/var/lib/lifeboat'], dir);
    }
  });

  test('grants exactly the Node reads and deletes of the stale-node cleanup, to the lifeboat ServiceAccount', () => {
    for (const dir of RESTORE) {
      const rd = r(dir);
      const role = one(rd, 'ClusterRole') as unknown as { metadata: { name: string }; rules: unknown[] };
      assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'delete'] }], dir);
      const binding = one(rd, 'ClusterRoleBinding') as unknown as { roleRef: { name: string }; subjects: unknown[] };
      assert.equal(binding.roleRef.name, role.metadata.name, dir);
      assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'lifeboat', namespace: 'lifeboat' }], dir);
      assert.equal(podSpec(rd).automountServiceAccountToken, true, dir);
      assert.deepEqual(byKind(rd, 'Role'), [], dir);
    }
  });
});

describe('the drill component', () => {
  test('adds the identity read-only, a drill schedule and scratch space on an emptyDir', () => {
    assert.ok(DRILL.length >= 2, DRILL.join(', '));
    for (const dir of DRILL) {
      const rd = r(dir);
      const config = daemonConfig(rd);
      assert.notEqual(config.daemon.schedules.drill, 'off', dir);
      assert.equal(config.encryption.identityFile, '/etc/lifeboat/identity/identity.txt', dir);
      const scratch = mountOf(rd, mainContainer(rd), config.drill.scratchDir!);
      assert.ok(scratch?.volume.emptyDir?.sizeLimit, `${dir}: drill.scratchDir on a bounded emptyDir`);
    }
  });
});

describe('monitoring objects', () => {
  test('the PrometheusRule is deploy/prometheus/prometheusrule.yaml, referenced, not copied', () => {
    const file = parse(readFileSync(path.join(DEPLOY, 'prometheus/prometheusrule.yaml'), 'utf8')) as K8sObject;
    for (const dir of MONITORED) {
      const rule = one(r(dir), 'PrometheusRule');
      assert.equal(rule.metadata.name, file.metadata.name, dir);
      assert.deepEqual(rule.spec, file.spec, dir);
    }
    const copies: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (/\.ya?ml$/.test(e.name) && /^kind:\s*PrometheusRule\s*$/m.test(readFileSync(p, 'utf8'))) copies.push(path.relative(DEPLOY, p));
      }
    };
    walk(DEPLOY);
    assert.deepEqual(copies, ['prometheus/prometheusrule.yaml']);
  });

  test('the example AlertmanagerConfig passes its schema, is applied by no kustomization, and routes like alertmanager.yml', () => {
    const file = path.join(DEPLOY, 'prometheus/alertmanagerconfig.yaml');
    const amc = parse(readFileSync(file, 'utf8')) as K8sObject;
    assert.equal(`${amc.apiVersion}/${amc.kind}`, 'monitoring.coreos.com/v1alpha1/AlertmanagerConfig');
    assert.doesNotThrow(() => MODELS['monitoring.coreos.com/v1alpha1/AlertmanagerConfig']!.validate(amc), (err: Error) => assert.fail(`alertmanagerconfig.yaml: ${err.message}`));
    assert.deepEqual(unknownFieldErrors([{ label: 'alertmanagerconfig.yaml', object: amc }]), []);
    assert.equal(amc.metadata.namespace, 'lifeboat');
    assert.equal(amc.metadata.labels?.['app.kubernetes.io/name'], 'lifeboat');
    // An example to edit (its webhook URLs are placeholders): nothing applies it as it is.
    for (const [dir, { objects }] of rendered) assert.deepEqual(objects.filter((o) => o.kind === 'AlertmanagerConfig'), [], dir);

    // The same route tree and receivers as the plain alertmanager.yml's Lifeboat route.
    interface AmcRoute { receiver: string; matchers?: { name: string; matchType?: string; value: string }[]; groupBy?: string[]; groupWait?: string; groupInterval?: string; repeatInterval?: string; routes?: AmcRoute[] }
    interface AmRoute { receiver: string; matchers?: string[]; group_by?: string[]; group_wait?: string; group_interval?: string; repeat_interval?: string; routes?: AmRoute[] }
    // Child routes are free-form JSON in the CRD, so the schema does not check their fields: this does.
    const routeFields = ['receiver', 'matchers', 'groupBy', 'groupWait', 'groupInterval', 'repeatInterval', 'routes', 'continue', 'muteTimeIntervals', 'activeTimeIntervals'];
    const fromAmc = (r: AmcRoute): unknown => ({
      ...Object.fromEntries(Object.keys(r).filter((k) => !routeFields.includes(k)).map((k) => [`unknown field ${k}`, true])),
      receiver: r.receiver,
      matchers: (r.matchers ?? []).map((m) => `${m.name}${m.matchType ?? '='}"${m.value}"`),
      group_by: r.groupBy,
      group_wait: r.groupWait,
      group_interval: r.groupInterval,
      repeat_interval: r.repeatInterval,
      routes: (r.routes ?? []).map(fromAmc),
    });
    const fromAm = (r: AmRoute): unknown => ({
      receiver: r.receiver,
      matchers: r.matchers ?? [],
      group_by: r.group_by,
      group_wait: r.group_wait,
      group_interval: r.group_interval,
      repeat_interval: r.repeat_interval,
      routes: (r.routes ?? []).map(fromAm),
    });
    const plain = parse(readFileSync(path.join(DEPLOY, 'prometheus/alertmanager.yml'), 'utf8')) as {
      route: AmRoute;
      receivers: { name: string; webhook_configs?: { url: string; send_resolved?: boolean }[] }[];
    };
    const lifeboatRoutes = (plain.route.routes ?? []).filter((r) => r.receiver.startsWith('lifeboat-'));
    assert.equal(lifeboatRoutes.length, 1);
    const spec = amc.spec as { route: AmcRoute; receivers: { name: string; webhookConfigs?: { url: string; sendResolved?: boolean }[] }[] };
    assert.deepEqual(fromAmc(spec.route), fromAm(lifeboatRoutes[0]!));
    assert.deepEqual(
      spec.receivers.map((r) => ({ name: r.name, webhooks: (r.webhookConfigs ?? []).map((w) => [w.url, w.sendResolved]) })),
      plain.receivers.filter((r) => r.name.startsWith('lifeboat-')).map((r) => ({ name: r.name, webhooks: (r.webhook_configs ?? []).map((w) => [w.url, w.send_resolved]) })),
    );
  });

  test('the Service, ServiceMonitor and NetworkPolicy select the pods and name their ports', () => {
    for (const dir of WORKLOADS) {
      const rd = r(dir);
      const podLabels = daemonSet(rd).spec!.template.metadata!.labels!;
      const selects = (sel: Record<string, string> | undefined, labels: Record<string, string>) =>
        !!sel && Object.keys(sel).length > 0 && Object.entries(sel).every(([k, v]) => labels[k] === v);
      const svc = one(rd, 'Service', 'lifeboat') as unknown as { metadata: { labels: Record<string, string> }; spec: { selector: Record<string, string>; ports: { name: string; port: number; targetPort: string }[] } };
      assert.ok(selects(svc.spec.selector, podLabels), `${dir}: Service selects the pods`);
      const portNames = (mainContainer(rd).ports ?? []).map((p) => p.name);
      for (const p of svc.spec.ports) assert.ok(portNames.includes(p.targetPort), `${dir}: Service port ${p.name}`);
      if (MONITORED.includes(dir)) {
        const sm = one(rd, 'ServiceMonitor') as unknown as { spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string; honorLabels?: boolean }[] } };
        assert.ok(selects(sm.spec.selector.matchLabels, svc.metadata.labels), `${dir}: ServiceMonitor selects the Service`);
        assert.deepEqual(sm.spec.endpoints.map((e) => [e.port, e.path, e.honorLabels]), [['metrics', '/metrics', true]], dir);
      } else {
        assert.deepEqual(byKind(rd, 'ServiceMonitor'), [], `${dir}: the ServiceMonitor only through ${MONITORING_COMPONENT}`);
      }
      assert.ok(svc.spec.ports.some((p) => p.name === 'metrics'), dir);
      const np = one(rd, 'NetworkPolicy') as unknown as { spec: { podSelector: { matchLabels: Record<string, string> }; ingress: { ports: { port: number }[] }[] } };
      assert.ok(selects(np.spec.podSelector.matchLabels, podLabels), `${dir}: NetworkPolicy selects the pods`);
      const allowed = np.spec.ingress.flatMap((i) => i.ports.map((p) => p.port)).sort();
      assert.deepEqual(allowed, [8443, 9464], dir);
    }
  });

  test('kube-prometheus-stack: its Prometheus finds both objects by the release label, its Grafana the dashboard', () => {
    for (const dir of MONITORED) {
      const rd = r(dir);
      for (const kind of ['ServiceMonitor', 'PrometheusRule']) {
        assert.equal(one(rd, kind).metadata.labels?.release, 'kube-prometheus-stack', `${dir}: ${kind} carries the label kube-prometheus-stack's Prometheus selects by`);
      }
      // The dashboard is generated from deploy/grafana/lifeboat.json, byte for byte.
      const cm = one(rd, 'ConfigMap', 'lifeboat-dashboard') as K8sObject & { data: Record<string, string> };
      assert.equal(cm.metadata.labels?.grafana_dashboard, '1', dir);
      assert.equal(cm.metadata.namespace, 'lifeboat', dir);
      assert.deepEqual(Object.keys(cm.data), ['lifeboat.json'], dir);
      assert.equal(cm.data['lifeboat.json'], readFileSync(path.join(DEPLOY, 'grafana/lifeboat.json'), 'utf8'), dir);
    }
    // Without the example's patch the component leaves the label out: the patch is what sets it.
    assert.equal(one(r('deploy/prometheus'), 'PrometheusRule').metadata.labels?.release, undefined);
    // No copy of the dashboard: the JSON file is its only source.
    const copies: string[] = [];
    const walk = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) walk(p);
        else if (readFileSync(p, 'utf8').includes('"uid": "lifeboat"')) copies.push(path.relative(DEPLOY, p));
      }
    };
    walk(DEPLOY);
    assert.deepEqual(copies, ['grafana/lifeboat.json']);
  });

  test('deploy/README.md documents every Secret, component, example and added capability', () => {
    const readme = readFileSync(path.join(DEPLOY, 'README.md'), 'utf8');
    for (const name of templates().keys()) assert.ok(readme.includes(name), `README names ${name}`);
    for (const d of [...components(), ...EXAMPLES]) assert.ok(readme.includes(d.replace(/^deploy\//, '')), `README covers ${d}`);
    for (const dir of WORKLOADS) {
      const spec = podSpec(r(dir));
      for (const c of [...spec.containers, ...(spec.initContainers ?? [])]) {
        for (const cap of c.securityContext?.capabilities?.add ?? []) assert.ok(readme.includes(cap), `README explains ${cap}`);
      }
      // Every mount, explained: its path is in the README.
      for (const m of mounts(r(dir), mainContainer(r(dir)))) assert.ok(readme.includes(`\`${m.path}\``), `README explains the mount ${m.path} (${dir})`);
    }
    assert.match(readme, /allowPrivilegeEscalation: false/);
    assert.match(readme, /runAsUser: 0/);
    assert.doesNotMatch(readme, /setcap|cap_[a-z_]+=|capabilities: \{[^}]*add:/, 'no file capability, no added capability');
  });
});
