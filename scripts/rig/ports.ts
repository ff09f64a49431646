import { createServer } from 'node:net';
import { freePorts as kernelPorts } from '../../src/exec/ports.ts';

/** Ports this process already handed out, so two rigs in one run never share one. */
const handedOut = new Set<number>();

/**
 * Free TCP ports on 127.0.0.1, asked of the kernel (src/exec/ports.ts), so parallel runs cannot
 * collide on fixed numbers; none is handed out twice in one process.
 */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  while (ports.length < n) {
    for (const port of await kernelPorts(n - ports.length)) {
      if (handedOut.has(port)) continue;
      handedOut.add(port);
      ports.push(port);
    }
  }
  return ports;
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * `n` consecutive free ports (for daemons that take a port range, like ceph-osd), from a
 * random start in 20000–45000 so that parallel runs rarely even try the same range.
 */
export async function freePortRange(n: number): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const start = 20000 + Math.floor(Math.random() * 25000);
    const range = Array.from({ length: n }, (_, i) => start + i);
    if (range.some((p) => handedOut.has(p))) continue;
    const free = await Promise.all(range.map(canBind));
    if (free.every(Boolean)) {
      for (const p of range) handedOut.add(p);
      return start;
    }
  }
  throw new Error(`no ${n} consecutive free ports on 127.0.0.1`);
}
