import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP load balancer on 127.0.0.1, like a Kubernetes Service without session affinity: each new
 * connection goes to the next of `ports`, in turn. Bytes are passed through untouched (TLS ends at
 * the daemon), so the daemon sees the client's certificate and the proxy's address.
 */
export interface RoundRobin {
  port: number;
  /** How many connections went to each target port so far. */
  counts: Map<number, number>;
  close(): Promise<void>;
}

export async function startRoundRobin(ports: readonly number[]): Promise<RoundRobin> {
  if (ports.length === 0) throw new Error('round robin over no ports');
  const counts = new Map<number, number>(ports.map((p) => [p, 0]));
  const open = new Set<Socket>();
  let next = 0;
  const server: Server = createServer((client) => {
    const port = ports[next % ports.length]!;
    next += 1;
    counts.set(port, (counts.get(port) ?? 0) + 1);
    const upstream = connect({ host: '127.0.0.1', port });
    for (const s of [client, upstream]) {
      open.add(s);
      s.once('close', () => open.delete(s));
    }
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
