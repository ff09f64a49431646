/**
 * deploy/ as a real apiserver judges it: every kustomization under deploy/ (the install, the
 * base, the examples, the Secret templates) and each combination of an example with the restore
 * and drill components (COMBINATIONS), rendered with the real `kubectl kustomize`, goes through `kubectl apply --dry-run=server --validate=strict` on a
 * one-host kubeadm control plane of the lab (scripts/lab/cluster.ts). The apiserver runs every
 * step but the write: strict decoding (unknown fields, types, quantities), defaulting, field
 * validation (RBAC objects included), and admission, with Pod Security enforced at the level
 * deploy/base/namespace.yaml declares; that Namespace is applied for real first. Pod Security
 * enforces on Pods, not on DaemonSets, so the pod each DaemonSet would make is dry-run too:
 * admitted in the declared namespace, refused in one that enforces baseline.
 *
 * The lab installs no CRD. Objects whose kind only an operator's CRD serves (the Prometheus
 * Operator's ServiceMonitor and PrometheusRule, Rook's ObjectBucketClaim) are left out, named,
 * and allowed only outside the kustomizations that must apply to a stock kubeadm cluster.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startKubeCluster, type KubeCluster } from '../../scripts/lab/cluster.ts';
import { COMBINATIONS, combinationName, kustomizations, render, renderCombination, type K8sObject, type Rendered } from '../support/kustomize.ts';

/** This file's lab network (10.249.23.0/24). */
const NET = 23;
/** Every kustomization under deploy/ and every combination the tests render. */
const ALL = [...kustomizations(), ...COMBINATIONS.map(combinationName)];
/** The kustomizations that `kubectl apply -k` must take on a stock kubeadm cluster: no CRD kinds. */
const STOCK = ALL.filter((d) => ['deploy', 'deploy/base', 'deploy/secrets', 'deploy/grafana'].includes(d) || /^deploy\/examples\/(local|rgw-static)\b/.test(d));
/** API groups of the operators deploy/ has optional objects for, and who serves them. */
const OPERATOR_GROUPS: Record<string, string> = { 'monitoring.coreos.com': 'the Prometheus Operator', 'objectbucket.io': 'Rook\'s bucket provisioner' };
/** Warnings the apiserver gives on deploy/ that are expected, by kustomization, and why. */
const EXPECTED_WARNINGS: Record<string, { warning: RegExp; why: string }[]> = {
  'deploy/secrets': [{ warning: /^tls: failed to find any PEM data in certificate input$/, why: 'the template of lifeboat-api-tls holds a placeholder, not a certificate' }],
};
/** Capabilities the Pod Security `baseline` level allows a container to add (Pod Security Standards). */
const BASELINE_CAPABILITIES = ['AUDIT_WRITE', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'MKNOD', 'NET_BIND_SERVICE', 'SETFCAP', 'SETGID', 'SETPCAP', 'SETUID', 'SYS_CHROOT'];
/** A namespace of the test's own that enforces `baseline`, to show that enforcement is on. */
const BASELINE_NAMESPACE = 'lifeboat-baseline';
const ENFORCE = 'pod-security.kubernetes.io/enforce';

/** What the apiserver serves for an apiVersion and kind. */
interface Served {
  namespaced: boolean;
}

interface PodTemplateSpec {
  metadata: { labels: Record<string, string> };
  spec: { hostNetwork?: boolean; volumes?: { name: string; hostPath?: unknown }[]; initContainers?: ContainerSpec[]; containers: ContainerSpec[] };
}
interface ContainerSpec {
  name: string;
  securityContext?: { capabilities?: { add?: string[] } };
}

let work: string;
let cluster: KubeCluster;
const rendered = new Map<string, Rendered>();
const served = new Map<string, Served>();
/** The Namespace objects deploy/ declares, by name. */
const namespaces = new Map<string, K8sObject>();
/** Per kustomization: objects the dry run accepted, and objects left out for want of a CRD. */
const counts = new Map<string, { accepted: number; needCrd: number }>();

const typeKey = (o: { apiVersion: string; kind: string }) => `${o.apiVersion}/${o.kind}`;
const label = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
const group = (o: K8sObject) => (o.apiVersion.includes('/') ? o.apiVersion.split('/')[0]! : '');
/**
 * Objects as a stream of JSON documents for kubectl's stdin. Not a v1 List: kubectl cannot ask the
 * apiserver to validate a List's fields and checks it against the schema on the client instead.
 * Not YAML: kubectl reads YAML 1.1, where an unquoted string such as `yes` is a boolean.
 */
const stream = (objects: unknown[]) => objects.map((o) => JSON.stringify(o)).join('\n');
/** An object as `kubectl -o name` prints it: `daemonset.apps/lifeboat`, `namespace/lifeboat`. */
const printedName = (o: K8sObject) => `${o.kind.toLowerCase()}${group(o) === '' ? '' : `.${group(o)}`}/${o.metadata.name}`;
const warnings = (stderr: string) => [...stderr.matchAll(/^Warning: (.*)$/gm)].map((m) => m[1]!);

/** `kubectl apply --dry-run=server` of `objects`; what kubectl and the apiserver answered. */
function dryRun(objects: unknown[]) {
  return cluster.kubectl(['apply', '--dry-run=server', '--validate=strict', '-o', 'name', '-f', '-'], { input: stream(objects), allowFailure: true });
}

/** The resources of every apiVersion deploy/ uses, from the apiserver's discovery; unserved groups are absent. */
async function discover(apiVersions: Set<string>): Promise<void> {
  for (const apiVersion of apiVersions) {
    const groupName = apiVersion.includes('/') ? apiVersion.split('/')[0]! : '';
    const got = await cluster.kubectl(['get', '--raw', groupName === '' ? `/api/${apiVersion}` : `/apis/${apiVersion}`], { allowFailure: true });
    if (got.code !== 0) {
      assert.match(got.stderr, /NotFound|could not find the requested resource/, `discovery of ${apiVersion}: ${got.stderr}`);
      continue;
    }
    const resources = (JSON.parse(got.stdout) as { resources: { name: string; kind: string; namespaced: boolean }[] }).resources;
    for (const r of resources.filter((x) => !x.name.includes('/'))) served.set(`${apiVersion}/${r.kind}`, { namespaced: r.namespaced });
  }
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'lifeboat-deploy-server-'));
  const start = performance.now();
  const phases: string[] = [];
  cluster = await startKubeCluster({ net: NET, dir: work, names: ['cp-1'], onPhase: (p, s) => phases.push(`${p} ${s.toFixed(1)} s`) });
  const version = JSON.parse((await cluster.kubectl(['version', '-o', 'json'])).stdout) as { serverVersion: { gitVersion: string } };
  console.log(`# lab (one host, kube-apiserver ${version.serverVersion.gitVersion}): ${phases.join(', ')}; started in ${((performance.now() - start) / 1000).toFixed(1)} s`);
  for (const rd of await Promise.all([...kustomizations().map(render), ...COMBINATIONS.map(renderCombination)])) rendered.set(rd.dir, rd);
  await discover(new Set([...rendered.values()].flatMap((rd) => rd.objects.map((o) => o.apiVersion))));
  // The Namespace comes from deploy/ and is created for real, so that the dry runs of the
  // namespaced objects are admitted against its Pod Security labels.
  for (const rd of rendered.values()) {
    for (const ns of rd.objects.filter((o) => o.kind === 'Namespace')) {
      const seen = namespaces.get(ns.metadata.name);
      if (seen) assert.deepEqual(ns, seen, `${rd.dir}: Namespace ${ns.metadata.name} differs from another kustomization's`);
      namespaces.set(ns.metadata.name, ns);
    }
  }
  assert.ok(namespaces.size > 0, 'deploy/ declares a Namespace');
  await cluster.kubectl(['apply', '-f', '-'], { input: stream([...namespaces.values()]) });
});

after(async () => {
  const sum = (f: (c: { accepted: number; needCrd: number }) => number) => [...counts.values()].reduce((a, c) => a + f(c), 0);
  console.log(`# ${sum((c) => c.accepted)} objects accepted by the apiserver's dry run in ${counts.size} kustomizations; ${sum((c) => c.needCrd)} left out for want of an operator's CRD`);
  await cluster?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('kubectl apply --dry-run=server of every kustomization under deploy/', () => {
  for (const dir of ALL) {
    test(dir, async () => {
      const rd = rendered.get(dir)!;
      assert.ok(rd.objects.length > 0, `${dir} renders nothing`);
      const toApply = rd.objects.filter((o) => served.has(typeKey(o)));
      const needCrd = rd.objects.filter((o) => !served.has(typeKey(o)));
      for (const o of needCrd) {
        assert.ok(OPERATOR_GROUPS[group(o)], `${dir}: the apiserver serves no ${o.apiVersion} ${o.kind} (${label(o)}), and no operator deploy/ documents does`);
      }
      if (STOCK.includes(dir)) assert.deepEqual(needCrd.map(label), [], `${dir} must apply to a stock kubeadm cluster, without CRDs`);
      for (const o of toApply.filter((x) => served.get(typeKey(x))!.namespaced)) {
        assert.ok(o.metadata.namespace && namespaces.has(o.metadata.namespace), `${dir}: ${label(o)} is in namespace ${o.metadata.namespace ?? '(none)'}, which deploy/ does not declare`);
      }

      let passed: string[] = [];
      if (toApply.length > 0) {
        const result = await dryRun(toApply);
        assert.equal(result.code, 0, `${dir}: the apiserver refused:\n${result.stderr}`);
        passed = result.stdout.split('\n').filter((l) => l !== '');
        const expected = toApply.map(printedName);
        assert.deepEqual([...passed].sort(), [...expected].sort(), `${dir}: every object accepted\n${result.stderr}`);
        const allowed = EXPECTED_WARNINGS[dir] ?? [];
        for (const w of warnings(result.stderr)) {
          const known = allowed.find((a) => a.warning.test(w));
          assert.ok(known, `${dir}: the apiserver warns: ${w}`);
          console.log(`# ${dir}: expected warning "${w}": ${known.why}`);
        }
      }
      counts.set(dir, { accepted: passed.length, needCrd: needCrd.length });
      const left = needCrd.map((o) => `${label(o)} (${OPERATOR_GROUPS[group(o)]})`);
      console.log(`# ${dir}: ${passed.length} of ${rd.objects.length} objects accepted${left.length > 0 ? `; not applied, their CRDs are not installed: ${left.join(', ')}` : ''}`);
    });
  }
});

/** Every DaemonSet deploy/ renders, with the kustomization it comes from. */
function daemonSets(): { dir: string; ds: K8sObject & { spec: { template: PodTemplateSpec } } }[] {
  return [...rendered.values()].flatMap((rd) => rd.objects.filter((o) => o.kind === 'DaemonSet').map((ds) => ({ dir: rd.dir, ds: ds as K8sObject & { spec: { template: PodTemplateSpec } } })));
}

/** The Pod the DaemonSet controller would create from `ds`'s template, in `namespace`. */
function podOf(ds: { metadata: { name: string }; spec: { template: PodTemplateSpec } }, namespace: string) {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { name: `${ds.metadata.name}-pod`, namespace, labels: ds.spec.template.metadata.labels }, spec: ds.spec.template.spec };
}

describe('Pod Security admission', () => {
  before(async () => {
    // A namespace that enforces baseline. The pods' ServiceAccount exists for real in both
    // namespaces: without it the ServiceAccount admission plugin refuses a pod before Pod Security.
    await cluster.kubectl(['apply', '-f', '-'], { input: stream([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: BASELINE_NAMESPACE, labels: { [ENFORCE]: 'baseline' } } }]) });
    const accounts = rendered.get('deploy/base')!.objects.filter((o) => o.kind === 'ServiceAccount');
    const copies = accounts.map((sa) => ({ ...sa, metadata: { ...sa.metadata, namespace: BASELINE_NAMESPACE } }));
    await cluster.kubectl(['apply', '-f', '-'], { input: stream([...accounts, ...copies]) });
  });

  test('the apiserver holds the Namespace of deploy/ with the level it declares: privileged, which the DaemonSet needs', async () => {
    for (const [name, ns] of namespaces) {
      const declared = ns.metadata.labels?.[ENFORCE];
      assert.ok(declared, `deploy/ declares no Pod Security level (${ENFORCE}) for namespace ${name}`);
      const live = JSON.parse((await cluster.kubectl(['get', 'namespace', name, '-o', 'json'])).stdout) as K8sObject;
      assert.equal(live.metadata.labels?.[ENFORCE], declared, `namespace ${name} on the apiserver`);
      // hostNetwork and hostPath are each beyond baseline (the next test shows the apiserver
      // refusing them), and there is no level between baseline and privileged.
      assert.equal(declared, 'privileged', `namespace ${name}`);
    }
  });

  test('every DaemonSet\'s pods are refused where baseline is enforced, naming each violation, and admitted in the namespace of deploy/', async () => {
    const all = daemonSets();
    assert.ok(all.length >= 10, `DaemonSets of the install, the base, the examples and the combinations: ${all.map((x) => x.dir).join(', ')}`);
    for (const { dir, ds } of all) {
      const spec = ds.spec.template.spec;
      const admitted = await dryRun([podOf(ds, ds.metadata.namespace!)]);
      assert.equal(admitted.code, 0, `${dir}: a pod of the DaemonSet in ${ds.metadata.namespace}:\n${admitted.stderr}`);
      assert.equal(admitted.stdout.trim(), `pod/${ds.metadata.name}-pod`, dir);
      assert.deepEqual(warnings(admitted.stderr), [], `${dir}: no Pod Security warning in ${ds.metadata.namespace}`);

      const refused = await dryRun([podOf(ds, BASELINE_NAMESPACE)]);
      assert.notEqual(refused.code, 0, `${dir}: a pod of the DaemonSet is admitted under baseline`);
      assert.equal(refused.stdout.trim(), '', dir);
      const message = refused.stderr;
      assert.match(message, new RegExp(`pods "${ds.metadata.name}-pod" is forbidden: violates PodSecurity "baseline:latest": `), dir);
      assert.equal(spec.hostNetwork, true, dir);
      assert.ok(message.includes('host namespaces (hostNetwork=true)'), `${dir}: ${message}`);
      const hostPaths = (spec.volumes ?? []).filter((v) => v.hostPath).map((v) => `"${v.name}"`);
      assert.ok(hostPaths.length > 0, dir);
      const clause = /hostPath volumes \(volumes? ([^)]*)\)/.exec(message)?.[1] ?? '';
      assert.deepEqual(clause.split(', ').sort(), [...hostPaths].sort(), `${dir}: the hostPath volumes named: ${message}`);
      for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
        const beyond = (c.securityContext?.capabilities?.add ?? []).filter((cap) => !BASELINE_CAPABILITIES.includes(cap));
        for (const cap of beyond) assert.ok(message.includes(`container "${c.name}" must not include "${cap}"`), `${dir}: ${c.name} adds ${cap}: ${message}`);
      }
      console.log(`# ${dir}: pod of the DaemonSet admitted in ${ds.metadata.namespace}; under baseline: ${message.slice(message.indexOf('violates')).trim()}`);
    }
  });

  test('the DaemonSet itself is accepted under baseline, only warned about: enforcement is on its pods', async () => {
    // The warning comes from the namespace's warn level, which defaults to its enforce level. The
    // namespace of deploy/ warns at privileged, so there the DaemonSet of any level passes silently:
    // only the pod checks above tell whether the declared level admits the pods.
    const { ds } = daemonSets().find((x) => x.dir === 'deploy/base')!;
    const result = await dryRun([{ ...ds, metadata: { ...ds.metadata, namespace: BASELINE_NAMESPACE } }]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), 'daemonset.apps/lifeboat');
    assert.ok(warnings(result.stderr).some((w) => w.startsWith('would violate PodSecurity "baseline:latest"')), result.stderr);
  });
});

describe('RBAC on the apiserver', () => {
  const sa = 'system:serviceaccount:lifeboat:lifeboat';
  const canI = async (verb: string, resource: string) => (await cluster.kubectl(['auth', 'can-i', verb, resource, `--as=${sa}`], { allowFailure: true })).stdout.trim();

  test('the base grants the ServiceAccount nothing; the restore component\'s grants, applied for real, allow exactly the Node reads and deletes', async () => {
    assert.equal(await canI('list', 'nodes'), 'no', 'before the restore component');
    const rbac = rendered.get('deploy/examples/local + restore')!.objects.filter((o) => group(o) === 'rbac.authorization.k8s.io');
    assert.deepEqual(rbac.map(label).sort(), ['ClusterRole/lifeboat-restore', 'ClusterRoleBinding/lifeboat-restore']);
    await cluster.kubectl(['apply', '-f', '-'], { input: stream(rbac) });
    for (const verb of ['get', 'list', 'delete']) assert.equal(await canI(verb, 'nodes'), 'yes', `${verb} nodes`);
    for (const [verb, resource] of [['create', 'nodes'], ['patch', 'nodes'], ['get', 'secrets'], ['list', 'pods'], ['delete', 'pods']] as const) {
      assert.equal(await canI(verb, resource), 'no', `${verb} ${resource}`);
    }
    await cluster.kubectl(['delete', '-f', '-'], { input: stream(rbac) });
  });
});

describe('the dry run fails where it should', () => {
  test('a misspelt field, a wrong type, a bad quantity and invalid RBAC objects are refused, with the apiserver\'s reason', async () => {
    const { ds } = daemonSets().find((x) => x.dir === 'deploy/base')!;
    const mutant = (change: (spec: Record<string, unknown>, container: Record<string, unknown>) => void) => {
      const copy = structuredClone(ds) as unknown as { spec: { template: { spec: Record<string, unknown> & { containers: Record<string, unknown>[] } } } };
      change(copy.spec.template.spec, copy.spec.template.spec.containers[0]!);
      return copy;
    };
    const cases: [string, unknown, RegExp][] = [
      ['misspelt field', mutant((_, c) => (c.volumeMount = c.volumeMounts)), /strict decoding error: unknown field "spec\.template\.spec\.containers\[0\]\.volumeMount"/],
      ['wrong type', mutant((s) => (s.hostNetwork = 'yes')), /cannot unmarshal string into Go struct field PodSpec\.spec\.template\.spec\.hostNetwork of type bool/],
      ['bad quantity', mutant((_, c) => ((c.resources as { limits: Record<string, string> }).limits.memory = '512 MiB')), /quantities must match the regular expression/],
      ['rule without verbs', { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRole', metadata: { name: 'lifeboat-mutant' }, rules: [{ apiGroups: [''], resources: ['nodes'] }] }, /rules\[0\]\.verbs: Required value/],
      ['binding to a Role, subject without namespace', { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'ClusterRoleBinding', metadata: { name: 'lifeboat-mutant' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'lifeboat-mutant' }, subjects: [{ kind: 'ServiceAccount', name: 'lifeboat' }] }, /roleRef\.kind: Unsupported value: "Role"[\s\S]*subjects\[0\]\.namespace: Required value/],
    ];
    for (const [what, object, reason] of cases) {
      const result = await dryRun([object]);
      assert.notEqual(result.code, 0, `${what}: accepted`);
      assert.equal(result.stdout.trim(), '', what);
      assert.match(result.stderr, reason, what);
    }
  });
});
