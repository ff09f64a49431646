import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { acceptsConnections } from '../../src/exec/ports.ts';
import { freePortRange, freePorts } from './ports.ts';
import { hasExited, spawnLogged, stopChild, tail } from './process.ts';

const runFile = promisify(execFile);

/**
 * A real single-node Ceph RGW (S3) from Debian's Pacific packages, on 127.0.0.1: one mon, one
 * memstore OSD and radosgw (beast), with no auth, all state in one folder. The settings that
 * matter are in shared/notes/ceph-rgw.md. Starts in a few seconds.
 *
 * With `https: true` beast also serves HTTPS on a second port, with a certificate (SANs
 * 127.0.0.1 and localhost) from a private CA made for this rig: `caFile` is that CA's
 * certificate, the bundle a client needs to trust `httpsEndpoint`.
 */
export interface Rgw {
  endpoint: string;
  /** `https://127.0.0.1:PORT`, only with `https: true`. */
  httpsEndpoint: string | undefined;
  /** The private CA's certificate (PEM) that signed the HTTPS certificate, only with `https: true`. */
  caFile: string | undefined;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  dir: string;
  pids: { mon: number; osd: number; rgw: number };
  /** SIGKILL or SIGTERM radosgw alone (the mon and OSD keep the data). */
  killGateway(signal?: NodeJS.Signals): void;
  startGateway(): Promise<void>;
  stop(): Promise<void>;
}

const DAEMON_ENV = { ...process.env, MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '2' };

export interface RgwOptions {
  dir: string;
  memstoreBytes?: number;
  detached?: boolean;
  /** Also serve HTTPS, with a certificate from a private CA made in `dir/tls`. */
  https?: boolean;
  /**
   * Run on a lab host (scripts/lab/hosts.ts): every command runs under `prefix` (the host's
   * namespaces), the mon and OSD on the host's own loopback, the gateway on `address`, where
   * every host of the lab reaches it over the bridge.
   */
  host?: { prefix: string[]; address: string };
}

export async function startRgw(options: RgwOptions): Promise<Rgw> {
  const dir = path.resolve(options.dir);
  for (const d of ['mon', 'osd', 'rgw', 'run', 'log', 'crash']) await mkdir(path.join(dir, d), { recursive: true });
  const [monPort, rgwPort, httpsPort] = await freePorts(options.https ? 3 : 2);
  const gatewayAddress = options.host?.address ?? '127.0.0.1';
  const prefix = options.host?.prefix ?? [];
  const run = (command: string, args: string[], o: { timeout?: number } = {}) => {
    const argv = [...prefix, command, ...args];
    return runFile(argv[0]!, argv.slice(1), o);
  };
  const tls = options.https ? await makeServingCertificate(path.join(dir, 'tls'), gatewayAddress) : undefined;
  const frontends = [`beast endpoint=${gatewayAddress}:${rgwPort}`];
  if (tls) frontends.push(`ssl_endpoint=${gatewayAddress}:${httpsPort} ssl_certificate=${tls.certFile} ssl_private_key=${tls.keyFile}`);
  const monV1 = await freePortRange(1);
  const osdMin = await freePortRange(16);
  const conf = path.join(dir, 'ceph.conf');
  const fsid = randomUUID();
  const keyring = path.join(dir, 'keyring');
  await writeFile(
    conf,
    `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${monPort},v1:127.0.0.1:${monV1}]
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind port min = ${osdMin}
ms bind port max = ${osdMin + 15}
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
crash dir = ${dir}/crash
keyring = ${keyring}
mon data avail crit = 0
mon data avail warn = 0
osd objectstore = memstore
memstore device bytes = ${options.memstoreBytes ?? 1 << 30}
[mon]
mon data = ${dir}/mon/$cluster-$id
paxos propose interval = 0.05
paxos min wait = 0.01
[osd]
osd data = ${dir}/osd/$cluster-$id
osd max object name len = 256
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = ${frontends.join(' ')}
rgw data = ${dir}/rgw
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw gc processor max time = 30
[client.admin]
admin socket =
`,
  );
  const c = ['-c', conf];
  await run('ceph-authtool', ['--create-keyring', keyring, '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
  await run('ceph-authtool', [keyring, '--gen-key', '-n', 'client.admin', '--cap', 'mon', 'allow *', '--cap', 'osd', 'allow *', '--cap', 'mgr', 'allow *']);
  const monmap = path.join(dir, 'monmap');
  await run('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort},v1:127.0.0.1:${monV1}]`, monmap]);
  await run('ceph-mon', [...c, '--mkfs', '-i', 'a', '--monmap', monmap, '--keyring', keyring]);

  const daemon = (name: string, args: string[]) => {
    const argv = [...prefix, args[0]!, ...c, ...args.slice(1)];
    return spawnLogged(argv[0]!, argv.slice(1), path.join(dir, 'log', `${name}.stdout`), { env: DAEMON_ENV, detached: options.detached });
  };
  const mon = daemon('mon', ['ceph-mon', '-f', '-i', 'a']);
  const osdUuid = randomUUID();
  const { stdout: osdId } = await run('ceph', [...c, '--connect-timeout', '20', 'osd', 'new', osdUuid]);
  const id = osdId.trim();
  await mkdir(path.join(dir, 'osd', `ceph-${id}`), { recursive: true });
  await run('ceph-osd', [...c, '-i', id, '--mkfs', '--osd-uuid', osdUuid]);
  const osd = daemon('osd', ['ceph-osd', '-f', '-i', id]);
  let rgw = daemon('rgw', ['radosgw', '-f', '-n', 'client.rgw.a']);

  const accessKeyId = `LB${randomBytes(9).toString('hex').toUpperCase()}`;
  const secretAccessKey = randomBytes(24).toString('base64url');
  await run('radosgw-admin', [...c, 'user', 'create', '--uid=lifeboat', '--display-name=lifeboat', `--access-key=${accessKeyId}`, `--secret-key=${secretAccessKey}`], { timeout: 60_000 });
  const endpoint = `http://${gatewayAddress}:${rgwPort}`;
  const gatewayPorts = tls ? [rgwPort!, httpsPort!] : [rgwPort!];
  const waitGateway = async () => {
    const deadline = Date.now() + 60_000;
    while (!(await Promise.all(gatewayPorts.map((port) => acceptsConnections(gatewayAddress, port)))).every(Boolean)) {
      if (hasExited(rgw)) throw new Error(`radosgw exited ${rgw.exitCode ?? rgw.signalCode}: see ${dir}/log`);
      if (Date.now() > deadline) throw new Error(`radosgw did not listen within 60 s: see ${dir}/log\n${tail(path.join(dir, 'log', 'client.rgw.a.log'), 8)}`);
      await sleep(50);
    }
  };
  await waitGateway();

  return {
    endpoint,
    httpsEndpoint: tls ? `https://${gatewayAddress}:${httpsPort}` : undefined,
    caFile: tls?.caFile,
    region: 'default',
    accessKeyId,
    secretAccessKey,
    dir,
    pids: { mon: mon.pid!, osd: osd.pid!, rgw: rgw.pid! },
    killGateway(signal = 'SIGKILL') {
      rgw.kill(signal);
    },
    async startGateway() {
      await stopChild(rgw);
      rgw = daemon('rgw', ['radosgw', '-f', '-n', 'client.rgw.a']);
      await waitGateway();
    },
    async stop() {
      await stopChild(rgw);
      await stopChild(osd);
      await stopChild(mon);
    },
  };
}

/**
 * A private CA and a serving certificate for `address`, 127.0.0.1 and localhost signed by it (P-256, ten
 * years), with openssl. The CA's key stays in `dir`; nothing here is trusted by the system.
 */
async function makeServingCertificate(dir: string, address: string): Promise<{ caFile: string; certFile: string; keyFile: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = (name: string) => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await writeFile(
    file('openssl.cnf'),
    `[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:${address},IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
`,
  );
  const common = ['-config', file('openssl.cnf'), '-days', '3650'];
  await runFile('openssl', ['req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.crt'), '-subj', '/CN=lifeboat-rig-rgw-ca', ...common, '-extensions', 'ca']);
  await runFile('openssl', ['req', '-x509', ...ec, '-keyout', file('rgw.key'), '-out', file('rgw.crt'), '-subj', `/CN=${address}`, '-CA', file('ca.crt'), '-CAkey', file('ca.key'), ...common, '-extensions', 'server']);
  return { caFile: file('ca.crt'), certFile: file('rgw.crt'), keyFile: file('rgw.key') };
}
