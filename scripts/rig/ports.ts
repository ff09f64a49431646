import { createServer } from 'node:net';

/** Ports this process already handed out, so two rigs in one run never share one. */
const handedOut = new Set<number>();

/**
 * Free TCP ports on 127.0.0.1, asked of the kernel (port 0), so parallel runs cannot collide
 * on fixed numbers.
 */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      ports.push(port);
    }
  }
  return ports;
}
