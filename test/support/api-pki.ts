import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertPair {
  cert: string;
  key: string;
}

/** Certificates for the API: a CA, the daemon's serving pair and client pairs, as PEM files. */
export interface ApiPki {
  ca: CertPair;
  /** localhost, 127.0.0.1 and ::1. */
  server: CertPair;
  /** O=lifeboat-operators, CN=ci-bot. */
  operatorClient: CertPair;
  /** CN=alice, no O. */
  viewerClient: CertPair;
  /** CN=mallory, O=nobody: signed by the CA, mapped to no role. */
  unmappedClient: CertPair;
  /** A different CA, and a client of it with O=lifeboat-operators. */
  otherCa: CertPair;
  strangerClient: CertPair;
}

interface Spec {
  subject: string;
  ca?: boolean;
  usage?: 'serverAuth' | 'clientAuth';
  sans?: string[];
}

/** EC P-256 keys: fast to make, so every test file can have its own PKI. */
async function pair(dir: string, name: string, spec: Spec, issuer?: CertPair): Promise<CertPair> {
  const key = path.join(dir, `${name}.key`);
  const cert = path.join(dir, `${name}.crt`);
  await run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  const ext = [
    `basicConstraints=critical,CA:${spec.ca ? 'TRUE' : 'FALSE'}`,
    spec.ca ? 'keyUsage=critical,digitalSignature,keyCertSign' : 'keyUsage=critical,digitalSignature',
  ];
  if (spec.usage) ext.push(`extendedKeyUsage=${spec.usage}`);
  if (spec.sans) ext.push(`subjectAltName=${spec.sans.join(',')}`);
  const config = path.join(dir, `${name}.cnf`);
  await writeFile(config, `[req]\ndistinguished_name=dn\nprompt=no\n[dn]\n[ext]\n${ext.join('\n')}\n`);
  const args = ['req', '-x509', '-new', '-key', key, '-subj', spec.subject, '-days', '30', '-config', config, '-extensions', 'ext', '-out', cert];
  if (issuer) args.push('-CA', issuer.cert, '-CAkey', issuer.key);
  await run('openssl', args);
  return { cert, key };
}

/** `sans`: more subjectAltNames of the server certificate (`IP:10.0.0.1`, `DNS:cp-1`). */
export async function makeApiPki(dir: string, sans: string[] = []): Promise<ApiPki> {
  await mkdir(dir, { recursive: true });
  const [ca, otherCa] = await Promise.all([
    pair(dir, 'ca', { subject: '/CN=lifeboat-test-ca', ca: true }),
    pair(dir, 'other-ca', { subject: '/CN=someone-else-ca', ca: true }),
  ]);
  const [server, operatorClient, viewerClient, unmappedClient, strangerClient] = await Promise.all([
    pair(dir, 'server', { subject: '/CN=lifeboat', usage: 'serverAuth', sans: ['DNS:localhost', 'IP:127.0.0.1', 'IP:0:0:0:0:0:0:0:1', ...sans] }, ca),
    pair(dir, 'operator', { subject: '/O=lifeboat-operators/CN=ci-bot', usage: 'clientAuth' }, ca),
    pair(dir, 'viewer', { subject: '/CN=alice', usage: 'clientAuth' }, ca),
    pair(dir, 'unmapped', { subject: '/O=nobody/CN=mallory', usage: 'clientAuth' }, ca),
    pair(dir, 'stranger', { subject: '/O=lifeboat-operators/CN=eve', usage: 'clientAuth' }, otherCa),
  ]);
  return { ca, server, operatorClient, viewerClient, unmappedClient, otherCa, strangerClient };
}
