import { readFileSync } from 'node:fs';
import { Etcd3 } from 'etcd3';
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../errors/errors.ts';

/** The client certificate, key and CA an etcd client presents, read once. */
export interface EtcdCredentials {
  rootCertificate: Buffer;
  certChain: Buffer;
  privateKey: Buffer;
}

/** Reads the client TLS files; a missing one is a ConfigError naming its field and path. */
export function readEtcdCredentials(tls: Config['etcd']['tls']): EtcdCredentials {
  const read = (field: 'caFile' | 'certFile' | 'keyFile') => {
    try {
      return readFileSync(tls[field]);
    } catch (err) {
      throw new ConfigError(`/etcd/tls/${field}`, `cannot read ${tls[field]}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  };
  return { rootCertificate: read('caFile'), certChain: read('certFile'), privateKey: read('keyFile') };
}

export interface EtcdClientOptions {
  /** One endpoint (calls that must reach one member), or several (etcd3 spreads calls over them). */
  endpoints: string | readonly string[];
  /**
   * The cluster's TLS (config etcd.tls): client certificate auth, and the server name checked
   * against the member's certificate. Absent for a throwaway etcd on its private unix socket.
   */
  tls?: Config['etcd']['tls'];
  /** Already read, so that many clients share one read (the snapshot source). */
  credentials?: EtcdCredentials;
  dialTimeoutMs: number;
  /** The largest response accepted; default 16 MiB. */
  maxResponseBytes?: number;
  /** The gRPC flow-control window, for streams that must go fast (snapshots); default gRPC's. */
  flowControlWindow?: number;
}

/** Every etcd client of the program is made here, so TLS, the server name and the limits are set one way. */
export function etcdClient(o: EtcdClientOptions): Etcd3 {
  return new Etcd3({
    hosts: typeof o.endpoints === 'string' ? o.endpoints : [...o.endpoints],
    ...(o.tls ? { credentials: o.credentials ?? readEtcdCredentials(o.tls) } : {}),
    dialTimeout: o.dialTimeoutMs,
    grpcOptions: {
      ...(o.tls ? { 'grpc.ssl_target_name_override': o.tls.serverName } : {}),
      ...(o.flowControlWindow === undefined ? {} : { 'grpc-node.flow_control_window': o.flowControlWindow }),
      'grpc.max_receive_message_length': o.maxResponseBytes ?? 16 << 20,
    },
  });
}
