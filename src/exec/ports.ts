import { connect, createServer, type Server } from 'node:net';

/**
 * `n` distinct TCP ports on `host` that were free a moment ago: the kernel picks each (bind to
 * port 0), all `n` listeners are held at once so they differ, then released for the caller's
 * process to bind. Another process could take one in between; the caller sees that as its
 * child failing to bind.
 */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const servers: Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < n; i++) {
      const server = createServer();
      servers.push(server);
      ports.push(
        await new Promise<number>((resolve, reject) => {
          server.once('error', reject);
          server.listen(0, host, () => {
            const address = server.address();
            if (typeof address === 'object' && address) resolve(address.port);
            else reject(new Error(`no port was assigned on ${host}`));
          });
        }),
      );
    }
    return ports;
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve()))));
  }
}

/** Whether something accepts TCP connections on `host:port` right now. */
export function acceptsConnections(host: string, port: number): Promise<boolean> {
  return accepts({ host, port });
}

/** Whether something accepts connections on the unix socket at `socketPath` right now. */
export function acceptsUnixConnections(socketPath: string): Promise<boolean> {
  return accepts({ path: socketPath });
}

function accepts(target: { host: string; port: number } | { path: string }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(target);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}
