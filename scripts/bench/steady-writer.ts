/**
 * A steady writer for scripts/bench-capture.ts, in its own process so that the capture's CPU is
 * measured alone: puts Kubernetes-shaped objects (a Pod's JSON, about 2 KiB, under
 * /registry/pods/<ns>/<name>, a new resourceVersion each time) at `rate` per second for
 * `seconds`, and prints one line per second: `<unix ms> <revision of the last put>`.
 *
 *   node scripts/bench/steady-writer.ts '{"endpoints":[...],"tls":{...},"rate":1000,"seconds":300}'
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { tlsClient, type TlsFiles } from '../rig/etcd.ts';

const { endpoints, tls, rate, seconds } = JSON.parse(process.argv[2]!) as { endpoints: string[]; tls: TlsFiles; rate: number; seconds: number };
const client = tlsClient(endpoints, tls);
const pod = (ns: number, name: number, version: number) =>
  JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: `web-${name}`, namespace: `team-${ns}`, resourceVersion: String(version), labels: { app: 'web', tier: 'frontend' }, annotations: { note: 'x'.repeat(800) } },
    spec: { containers: [{ name: 'web', image: 'registry.example/web:1.2.3', ports: [{ containerPort: 8080 }], resources: { requests: { cpu: '100m', memory: '128Mi' } } }] },
    status: { phase: 'Running', podIP: `10.244.${ns}.${name % 250}`, conditions: [{ type: 'Ready', status: 'True' }] },
  });
const started = performance.now();
const total = rate * seconds;
let done = 0;
let lastRevision = '0';
let nextReport = 1000;
// Several writers in flight keep the rate whatever one put's latency is.
await Promise.all(Array.from({ length: 16 }, async () => {
  while (done < total) {
    const i = done++;
    const due = (i * 1000) / rate - (performance.now() - started);
    if (due > 0) await sleep(due);
    const res = await client.kv.put({ key: Buffer.from(`/registry/pods/team-${i % 50}/web-${i % 5000}`), value: Buffer.from(pod(i % 50, i % 5000, i)) });
    if (BigInt(res.header.revision) > BigInt(lastRevision)) lastRevision = res.header.revision;
    if (performance.now() - started >= nextReport) {
      nextReport += 1000;
      process.stdout.write(`${Date.now()} ${lastRevision}\n`);
    }
  }
}));
process.stdout.write(`${Date.now()} ${lastRevision}\n`);
client.close();
