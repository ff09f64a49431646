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
 * - Where what needs a CRD comes from, that components combine, the monitoring objects, and
 *   that deploy/README.md covers them.
 *
 * The DaemonSet's security settings, mounts and config are deploy-daemonset.test.ts's.
 */
import { test, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { parse } from 'yaml';
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
import { COMBINATIONS, combinationName, components, DEPLOY, kustomizations, type K8sObject, type Rendered } from '../support/kustomize.ts';
import { REPO } from '../support/lifeboat.ts';
import { BUILT_IN_GROUPS, byKind, COMBOS, daemonConfig, daemonSet, EXAMPLES, group, mainContainer, MONITORED, MONITORING_COMPONENT, mounts, OBC_STAND_INS, one, podSpec, r, renderAll, rendered, templates, WORKLOADS } from '../support/deploy.ts';

before(renderAll);

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
