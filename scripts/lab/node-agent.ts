/**
 * The part of a kubelet that kubeadm relies on besides static pods, done the kubelet's way
 * against the real apiserver, on a lab host (its own `/etc/kubernetes` and `/var/lib/kubelet`):
 *
 * - TLS bootstrap: with `/etc/kubernetes/bootstrap-kubelet.conf` (kubeadm join writes it) and
 *   no `kubelet.conf`, it makes an ECDSA key, sends a CertificateSigningRequest for
 *   `system:node:<name>` (signer `kubernetes.io/kube-apiserver-client-kubelet`) with the
 *   bootstrap token, waits until the real controller manager approves and signs it, writes
 *   `/var/lib/kubelet/pki/kubelet-client-current.pem` and a `kubelet.conf` that uses it.
 * - Registration: once `kubelet.conf` exists, it creates its Node object with the kubelet's
 *   credentials (the Node authorizer and NodeRestriction allow exactly that), and renews the
 *   node's Lease in `kube-node-lease` every 10 s, so the node does not look dead.
 * - Mirror pods: for every static pod manifest, a mirror Pod `<name>-<node>` in the API, owned by
 *   the Node, with the manifest's annotations (kubeadm join finds the etcd members through
 *   them) and `kubernetes.io/config.mirror`; replaced when the manifest changes, deleted when it
 *   goes; its status phase says whether the kubelet runs the pod.
 *
 * Nothing here runs containers: the Node reports no capacity for pods and is never Ready.
 */
import { execFile } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { parse, stringify } from 'yaml';

const run = promisify(execFile);
const KUBELET_CONF = '/etc/kubernetes/kubelet.conf';
const BOOTSTRAP_CONF = '/etc/kubernetes/bootstrap-kubelet.conf';
const CLIENT_PEM = '/var/lib/kubelet/pki/kubelet-client-current.pem';

interface Credentials {
  server: URL;
  ca: Buffer;
  cert?: Buffer;
  key?: Buffer;
  token?: string;
}

interface Kubeconfig {
  clusters: { name: string; cluster: { server: string; 'certificate-authority-data'?: string; 'certificate-authority'?: string } }[];
  users: { name: string; user: { 'client-certificate-data'?: string; 'client-key-data'?: string; 'client-certificate'?: string; 'client-key'?: string; token?: string } }[];
}

async function credentials(file: string): Promise<Credentials> {
  const doc = parse(await readFile(file, 'utf8')) as Kubeconfig;
  const cluster = doc.clusters[0]!.cluster;
  const user = doc.users[0]!.user;
  const data = (b64: string | undefined, file: string | undefined) => (b64 !== undefined ? Promise.resolve(Buffer.from(b64, 'base64')) : file !== undefined ? readFile(file) : Promise.resolve(undefined));
  const ca = await data(cluster['certificate-authority-data'], cluster['certificate-authority']);
  if (!ca) throw new Error(`${file} names no certificate authority`);
  const cert = await data(user['client-certificate-data'], user['client-certificate']);
  const key = await data(user['client-key-data'], user['client-key']);
  return { server: new URL(cluster.server), ca, ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(user.token ? { token: user.token } : {}) };
}

interface Reply {
  status: number;
  body: unknown;
}

function call(creds: Credentials, method: string, urlPath: string, body?: unknown, contentType = 'application/json'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        host: creds.server.hostname,
        port: creds.server.port || 443,
        path: urlPath,
        method,
        ca: creds.ca,
        cert: creds.cert,
        key: creds.key,
        timeout: 10_000,
        headers: {
          accept: 'application/json',
          ...(creds.token ? { authorization: `Bearer ${creds.token}` } : {}),
          ...(payload ? { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.once('timeout', () => req.destroy(new Error(`${method} ${urlPath}: timed out`)));
    req.once('error', reject);
    req.end(payload);
  });
}

/** The kubelet's TLS bootstrap with the token of bootstrap-kubelet.conf; writes kubelet.conf. */
export async function tlsBootstrap(nodeName: string, log: (line: string) => void): Promise<void> {
  const boot = await credentials(BOOTSTRAP_CONF);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const keyPem = privateKey.export({ type: 'sec1', format: 'pem' }).toString();
  await mkdir('/var/lib/kubelet/pki', { recursive: true, mode: 0o755 });
  const keyFile = '/var/lib/kubelet/pki/kubelet-client.key.new';
  await writeFile(keyFile, keyPem, { mode: 0o600 });
  const { stdout: csr } = await run('openssl', ['req', '-new', '-key', keyFile, '-subj', `/O=system:nodes/CN=system:node:${nodeName}`]).finally(() => rm(keyFile, { force: true }));
  const created = await call(boot, 'POST', '/apis/certificates.k8s.io/v1/certificatesigningrequests', {
    apiVersion: 'certificates.k8s.io/v1',
    kind: 'CertificateSigningRequest',
    metadata: { generateName: 'node-csr-' },
    spec: { request: Buffer.from(csr).toString('base64'), signerName: 'kubernetes.io/kube-apiserver-client-kubelet', usages: ['digital signature', 'client auth'] },
  });
  if (created.status !== 201) throw new Error(`CSR refused: ${created.status} ${JSON.stringify(created.body)}`);
  const name = (created.body as { metadata: { name: string } }).metadata.name;
  log(`CSR ${name} sent for system:node:${nodeName}`);
  const until = Date.now() + 120_000;
  for (;;) {
    const got = await call(boot, 'GET', `/apis/certificates.k8s.io/v1/certificatesigningrequests/${name}`);
    const cert = (got.body as { status?: { certificate?: string } }).status?.certificate;
    if (got.status === 200 && cert) {
      await writeFile(CLIENT_PEM, Buffer.from(cert, 'base64').toString() + keyPem, { mode: 0o600 });
      break;
    }
    if (Date.now() > until) throw new Error(`CSR ${name} was not signed within 120 s: ${JSON.stringify(got.body)}`);
    await sleep(500);
  }
  const doc = parse(await readFile(BOOTSTRAP_CONF, 'utf8')) as Kubeconfig;
  const cluster = doc.clusters[0]!;
  const kubeconfig = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [cluster],
    contexts: [{ name: 'default-context', context: { cluster: cluster.name, user: 'default-auth', namespace: 'default' } }],
    'current-context': 'default-context',
    users: [{ name: 'default-auth', user: { 'client-certificate': CLIENT_PEM, 'client-key': CLIENT_PEM } }],
    preferences: {},
  };
  await writeFile(KUBELET_CONF, stringify(kubeconfig), { mode: 0o600 });
  log(`TLS bootstrap done: ${KUBELET_CONF} uses ${CLIENT_PEM}`);
}

/** Creates this host's Node object (if missing) with the kubelet's own credentials. */
export async function registerNode(nodeName: string, log: (line: string) => void): Promise<void> {
  const creds = await credentials(KUBELET_CONF);
  const got = await call(creds, 'GET', `/api/v1/nodes/${nodeName}`);
  if (got.status === 200) return;
  const created = await call(creds, 'POST', '/api/v1/nodes', {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: nodeName, labels: { 'kubernetes.io/hostname': nodeName, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': process.arch === 'x64' ? 'amd64' : process.arch } },
  });
  if (created.status !== 201 && created.status !== 409) throw new Error(`registering Node ${nodeName}: ${created.status} ${JSON.stringify(created.body)}`);
  log(`Node ${nodeName} registered`);
}

/** Renews the node's Lease (kube-node-lease), creating it when missing. */
export async function renewLease(nodeName: string): Promise<void> {
  const creds = await credentials(KUBELET_CONF);
  const now = new Date().toISOString().replace(/Z$/, '000Z');
  const spec = { holderIdentity: nodeName, leaseDurationSeconds: 40, renewTime: now };
  const patched = await call(creds, 'PATCH', `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${nodeName}`, { spec }, 'application/merge-patch+json');
  if (patched.status === 404) {
    await call(creds, 'POST', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: nodeName }, spec });
  }
}

const MANIFESTS = '/etc/kubernetes/manifests';
const MIRROR = 'kubernetes.io/config.mirror';

interface PodDoc {
  metadata: { name: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  spec: Record<string, unknown>;
}

/** Makes the mirror pods match the static pod manifests; `running(file)` says if the kubelet runs it. */
export async function syncMirrorPods(nodeName: string, hostIP: string, running: (file: string) => boolean, reported: Map<string, boolean>, log: (line: string) => void): Promise<void> {
  const creds = await credentials(KUBELET_CONF);
  const node = await call(creds, 'GET', `/api/v1/nodes/${nodeName}`);
  if (node.status !== 200) return;
  const nodeUid = (node.body as { metadata: { uid: string } }).metadata.uid;
  const wanted = new Map<string, { doc: PodDoc; hash: string; file: string }>();
  for (const file of (await readdir(MANIFESTS).catch(() => [] as string[])).filter((f) => !f.startsWith('.') && /\.ya?ml$/.test(f))) {
    const text = await readFile(`${MANIFESTS}/${file}`, 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    const doc = parse(text) as PodDoc;
    if (!doc?.metadata?.name) continue;
    wanted.set(`${doc.metadata.name}-${nodeName}`, { doc, hash: createHash('sha256').update(text).digest('hex').slice(0, 32), file });
  }
  const listed = await call(creds, 'GET', `/api/v1/namespaces/kube-system/pods?fieldSelector=spec.nodeName%3D${nodeName}`);
  const have = new Map(((listed.body as { items?: PodDoc[] }).items ?? []).filter((p) => p.metadata.annotations?.[MIRROR]).map((p) => [p.metadata.name, p.metadata.annotations![MIRROR]!]));
  for (const [name, hash] of have) {
    if (wanted.get(name)?.hash !== hash) {
      await call(creds, 'DELETE', `/api/v1/namespaces/kube-system/pods/${name}`);
      have.delete(name);
      reported.delete(name);
      log(`mirror pod ${name} deleted`);
    }
  }
  for (const [name, { doc, hash, file }] of wanted) {
    if (!have.has(name)) {
      const annotations = { ...doc.metadata.annotations, [MIRROR]: hash, 'kubernetes.io/config.hash': hash, 'kubernetes.io/config.source': 'file' };
      const pod = {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { ...doc.metadata, name, namespace: 'kube-system', annotations, ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: nodeName, uid: nodeUid, controller: true }] },
        spec: { ...doc.spec, nodeName },
      };
      const created = await call(creds, 'POST', '/api/v1/namespaces/kube-system/pods', pod);
      if (created.status !== 201 && created.status !== 409) throw new Error(`mirror pod ${name}: ${created.status} ${JSON.stringify(created.body)}`);
      log(`mirror pod ${name} created`);
    }
    const up = running(file);
    if (reported.get(name) === up) continue;
    const status = { phase: up ? 'Running' : 'Pending', hostIP, podIP: hostIP, podIPs: [{ ip: hostIP }], conditions: [{ type: 'Ready', status: up ? 'True' : 'False' }] };
    const patched = await call(creds, 'PATCH', `/api/v1/namespaces/kube-system/pods/${name}/status`, { status }, 'application/merge-patch+json');
    if (patched.status === 200) reported.set(name, up);
  }
}

/** Bootstrap, register, renew and mirror until `stopped()`; every failure is logged and retried. */
export async function runNodeAgent(nodeName: string, hostIP: string, running: (file: string) => boolean, stopped: () => boolean, log: (line: string) => void): Promise<void> {
  let registered = false;
  let lastLease = 0;
  const reported = new Map<string, boolean>();
  while (!stopped()) {
    try {
      if (!existsSync(KUBELET_CONF) && existsSync(BOOTSTRAP_CONF)) await tlsBootstrap(nodeName, log);
      if (existsSync(KUBELET_CONF)) {
        if (!registered) {
          await registerNode(nodeName, log);
          registered = true;
        }
        if (Date.now() - lastLease > 10_000) {
          await renewLease(nodeName);
          lastLease = Date.now();
        }
        await syncMirrorPods(nodeName, hostIP, running, reported, log);
      }
    } catch (err) {
      log(`node agent: ${(err as Error).message}`);
    }
    await sleep(500);
  }
}

/** openssl is what makes the CSR; say so early. */
export async function checkNodeAgentTools(): Promise<void> {
  await run('openssl', ['version']).catch(() => {
    throw new Error('the lab kubelet needs openssl to make its certificate signing request');
  });
}
