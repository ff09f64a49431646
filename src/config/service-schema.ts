import { Type } from '@sinclair/typebox';
import { NonEmpty, Strict } from './schema-parts.ts';

/**
 * The serving side of the config: restores on this node, the daemon (schedules, election,
 * state), the HTTPS API, the metrics listener, the CLI's client section, and logging.
 */
/** An IANA time zone name, checked when the config is loaded. */
const TimeZone = Type.String({ minLength: 1, default: 'UTC' });
/** A cron expression (5 or 6 fields, node-cron syntax), or `off`; checked when the config is loaded. */
const Cron = (fallback: string) => Type.String({ minLength: 1, default: fallback });

const Listen = (port: number) =>
  Type.Object(
    {
      host: Type.String({ minLength: 1, default: '0.0.0.0' }),
      port: Type.Integer({ minimum: 0, maximum: 65535, default: port }),
    },
    { ...Strict, default: {} },
  );

/** Restores on this node (in place, or into a fresh kubeadm control plane). Paths are under kit.hostRoot. */
export const RestoreSchema = Type.Object(
  {
    manifestsDir: Type.String({ minLength: 1, default: '/etc/kubernetes/manifests' }),
    /** etcd's data dir; `auto` reads it from the etcd static pod manifest, else /var/lib/etcd. */
    etcdDataDir: Type.String({ minLength: 1, default: 'auto' }),
    /** Added to the backup's revision on restore, at least this much (see the runbook). */
    minRevisionBump: Type.Integer({ minimum: 1000, maximum: 1e15, default: 1_000_000 }),
    /** How long to wait for etcd and the apiserver to stop or become healthy. */
    etcdWaitSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 120 }),
    apiserverWaitSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 300 }),
    /** After a restore, delete control-plane Node objects of hosts not in the new member set (else only report them). */
    deleteStaleNodes: Type.Boolean({ default: false }),
    /** This host's address for a fresh control plane (apiserver advertise address, etcd URLs); default: from the plan's member. */
    advertiseAddress: Type.Optional(NonEmpty),
    /** How a fresh control plane runs `kubeadm init` on this host, beyond what the kit decides. */
    kubeadm: Type.Object(
      {
        /** nodeRegistration.criSocket of the InitConfiguration; default: kubeadm detects the container runtime. */
        criSocket: Type.Optional(Type.String({ pattern: '^(unix://)?/\\S+$', description: 'the CRI socket, e.g. unix:///run/containerd/containerd.sock' })),
        /** More preflight checks for `kubeadm init` to ignore, by name (DirAvailable--<etcd data dir> always is). */
        ignorePreflightErrors: Type.Array(Type.String({ pattern: '^[A-Za-z0-9][-A-Za-z0-9_.]*$', description: 'a kubeadm preflight check name, e.g. SystemVerification' }), { default: [], maxItems: 64 }),
      },
      { ...Strict, default: {} },
    ),
  },
  { ...Strict, default: {} },
);

export const DaemonSchema = Type.Object(
  {
    /** Job records and restore journals live here (a hostPath in the DaemonSet). */
    stateDir: Type.String({ minLength: 1, default: '/var/lib/lifeboat/state' }),
    schedules: Type.Object(
      {
        timezone: TimeZone,
        /** Backups; the expected interval (for the staleness alert) is derived from it. */
        backup: Cron('0 * * * *'),
        /** Retention over the whole catalogue. */
        prune: Cron('30 2 * * *'),
        /** A restore drill of the newest backup; needs encryption.identityFile. */
        drill: Cron('off'),
      },
      { ...Strict, default: {} },
    ),
    election: Type.Object(
      {
        /** The lease TTL: a dead leader is replaced within about this long. */
        ttlSeconds: Type.Integer({ minimum: 2, maximum: 600, default: 15 }),
        /** The etcd key prefix of the election, one per cluster. */
        prefix: Type.String({ minLength: 1, default: '/lifeboat/election/' }),
      },
      { ...Strict, default: {} },
    ),
    /** How often the store cleanup (orphan archives, stale multipart uploads) runs. */
    cleanupIntervalSeconds: Type.Integer({ minimum: 10, maximum: 7 * 86400, default: 3600 }),
    /** On SIGTERM, how long the running job may take to finish before it is aborted. */
    shutdownGraceSeconds: Type.Integer({ minimum: 0, maximum: 3600, default: 30 }),
    /** Finished jobs remembered for GET /v1/jobs. */
    jobHistory: Type.Integer({ minimum: 1, maximum: 10_000, default: 200 }),
  },
  { ...Strict, default: {} },
);

export const ApiSchema = Type.Object(
  {
    listen: Listen(8443),
    /** The API is HTTPS only. */
    tls: Type.Object(
      {
        certFile: Type.String({ minLength: 1, default: '/etc/lifeboat/tls/tls.crt' }),
        keyFile: Type.String({ minLength: 1, default: '/etc/lifeboat/tls/tls.key' }),
        /** Client certificates signed by this CA authenticate (mTLS); without it only tokens do. */
        clientCaFile: Type.Optional(NonEmpty),
        /** How often the three files are checked for a renewal (cert-manager replaces them); a new pair is used without a restart. */
        reloadIntervalSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 30 }),
        /**
         * The CA (PEM bundle) that the leader's serving certificate must chain to when a follower
         * forwards a request to it. Default: the CA certificates that follow the leaf in certFile
         * (the chain cert-manager and most CAs write there); when certFile holds the leaf alone
         * and this is not set, nothing is forwarded and followers answer 409 NOT_LEADER.
         */
        peerCaFile: Type.Optional(NonEmpty),
      },
      { ...Strict, default: {} },
    ),
    /**
     * This instance's API as the other instances reach it, published with the leader election so
     * that a follower can forward leader-only requests: `https://host:port`. Default:
     * https://<listen.host>:<the bound port>, or https://<node>:<port> when listen.host is a
     * wildcard. The DaemonSet sets it from the node's address (status.hostIP).
     */
    advertiseURL: Type.Optional(Type.String({ pattern: '^https://[^\\s/]+/?$', description: "this instance's API for the other instances, https://host:port" })),
    /** How long a follower waits for the leader to answer a forwarded request, then answers 502 DAEMON_UNREACHABLE. */
    forwardTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 300, default: 30 }),
    /** `lifeboat token create` writes lines for it: `sha256:<hex> <role> <name>`. */
    tokensFile: Type.Optional(NonEmpty),
    /** Maps a client certificate's subject to a role; the first match wins. */
    clientCertRoles: Type.Array(
      Type.Object(
        {
          cn: Type.Optional(NonEmpty),
          o: Type.Optional(NonEmpty),
          role: Type.Union([Type.Literal('viewer'), Type.Literal('operator'), Type.Literal('restorer')]),
        },
        Strict,
      ),
      { default: [] },
    ),
    /** Failed authentications allowed per client address per minute, then 429. */
    authFailuresPerMinute: Type.Integer({ minimum: 1, maximum: 10_000, default: 10 }),
  },
  { ...Strict, default: {} },
);

export const MetricsSchema = Type.Object(
  {
    /** Plain HTTP, no auth: GET /metrics (and /healthz, /readyz) for Prometheus and kubelet probes. */
    listen: Listen(9464),
  },
  { ...Strict, default: {} },
);

/**
 * How `lifeboat status`, `trigger` and `jobs` reach a running daemon's API, and how they
 * authenticate: a bearer token (from `tokenFile`, or `token`, best set as LIFEBOAT_CLIENT__TOKEN)
 * or a client certificate (`certFile` and `keyFile`, signed by the daemon's api.tls.clientCaFile).
 */
export const ClientSchema = Type.Object(
  {
    url: Type.String({ pattern: '^https://[^\\s/]+/?$', default: 'https://127.0.0.1:8443', description: 'the daemon API, https://host:port' }),
    /** PEM bundle that signed the daemon's serving certificate; without it, the system CAs. */
    caFile: Type.Optional(NonEmpty),
    /** The name checked against the daemon's certificate, when it differs from the URL's host. */
    serverName: Type.Optional(NonEmpty),
    certFile: Type.Optional(NonEmpty),
    keyFile: Type.Optional(NonEmpty),
    /** A file holding the bearer token that `lifeboat token create` printed. */
    tokenFile: Type.Optional(NonEmpty),
    token: Type.Optional(NonEmpty),
  },
  { ...Strict, default: {} },
);

export const LogSchema = Type.Object(
  {
    level: Type.Union(
      ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].map((l) => Type.Literal(l)),
      { default: 'info' },
    ),
  },
  { ...Strict, default: {} },
);
