import { countKeys } from '../etcd/etcd3-source.ts';
import { throwawayClient } from '../etcd/throwaway.ts';
import type { DrillProbe } from './drill.ts';

/**
 * The drill's view of its throwaway etcd, through etcd3 (its unix socket, one host). The
 * counts are count-only ranges (no key or value crosses the wire).
 */
export function etcd3Probe(endpoint: string): DrillProbe {
  const client = throwawayClient(endpoint);
  return {
    async status(deadline) {
      const status = await client.maintenance.status({ deadline });
      return { revision: status.header.revision, hasLeader: status.leader !== '0' };
    },
    counts: (revision, deadline) => countKeys(client, revision, { deadline }),
    close: () => client.close(),
  };
}
