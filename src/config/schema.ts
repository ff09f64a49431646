import { Type, type Static } from '@sinclair/typebox';

/**
 * The one config file, as YAML. Every default here is kubeadm's or the embedded default, so an
 * empty file (plus age recipients) backs up a kubeadm control-plane node to the local directory
 * store.
 */
const Strict = { additionalProperties: false } as const;

const NonEmpty = Type.String({ minLength: 1 });

/** DNS-1123 label: the cluster name is part of every object key. */
export const ClusterName = Type.String({
  pattern: '^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$',
  description: 'lower-case letters, digits and dashes, at most 63 characters',
});

export const EtcdTlsSchema = Type.Object(
  {
    caFile: Type.String({ minLength: 1, default: '/etc/kubernetes/pki/etcd/ca.crt' }),
    certFile: Type.String({ minLength: 1, default: '/etc/kubernetes/pki/etcd/healthcheck-client.crt' }),
    keyFile: Type.String({ minLength: 1, default: '/etc/kubernetes/pki/etcd/healthcheck-client.key' }),
    /**
     * The name checked against the member's serving certificate. kubeadm's etcd serving
     * certificates always carry the `localhost` SAN, whatever address the member listens on.
     */
    serverName: Type.String({ minLength: 1, default: 'localhost' }),
  },
  { ...Strict, default: {} },
);

export const EtcdSchema = Type.Object(
  {
    endpoints: Type.Array(Type.String({ pattern: '^https?://[^\\s/]+$' }), {
      minItems: 1,
      default: ['https://127.0.0.1:2379'],
    }),
    tls: EtcdTlsSchema,
    /** Also try the client URLs etcd reports for the other members when choosing one to snapshot. */
    discoverMembers: Type.Boolean({ default: true }),
    dialTimeoutMs: Type.Integer({ minimum: 100, maximum: 120_000, default: 5000 }),
  },
  { ...Strict, default: {} },
);

export const KitSchema = Type.Object(
  {
    /** Every kit path resolves under this root; `/` on a real node, a temp dir in tests. */
    hostRoot: Type.String({ minLength: 1, default: '/' }),
    kubernetesDir: Type.String({ minLength: 1, default: '/etc/kubernetes' }),
    /** kubeadm ClusterConfiguration as given to `kubeadm init --config`. Optional. */
    clusterConfiguration: Type.String({ minLength: 1, default: '/etc/kubernetes/kubeadm-config.yaml' }),
    /**
     * `auto` reads `--encryption-provider-config` from the kube-apiserver static pod manifest;
     * `none` skips it; anything else is the path of the file (then required).
     */
    encryptionProviderConfig: Type.String({ minLength: 1, default: 'auto' }),
    extraFiles: Type.Array(
      Type.Object({ path: NonEmpty, required: Type.Boolean({ default: true }) }, Strict),
      { default: [] },
    ),
    /** Kit files are read whole, so each is capped. */
    maxFileBytes: Type.Integer({ minimum: 1024, maximum: 64 << 20, default: 4 << 20 }),
  },
  { ...Strict, default: {} },
);

export const FsStoreSchema = Type.Object(
  { dir: Type.String({ minLength: 1, default: '/var/lib/lifeboat/backups' }) },
  Strict,
);

export const S3StoreSchema = Type.Object(
  {
    /** `https://rgw.example.internal` for Ceph RGW or another S3; absent for AWS. */
    endpoint: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$' })),
    region: Type.String({ minLength: 1, default: 'us-east-1' }),
    bucket: Type.String({ pattern: '^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$' }),
    /** Prepended to every key; end it with `/`. */
    prefix: Type.String({ default: '', pattern: '^$|^[^/].*/$' }),
    /** RGW needs path-style addressing unless its DNS has wildcard bucket names. */
    forcePathStyle: Type.Boolean({ default: true }),
    /** PEM bundle for an endpoint behind a private CA. */
    caFile: Type.Optional(NonEmpty),
    /**
     * Credentials, from files (a mounted Kubernetes Secret) or values; the values are better set
     * from the environment (LIFEBOAT_STORE__S3__SECRET_ACCESS_KEY) than written here. Without
     * either, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used.
     */
    accessKeyIdFile: Type.Optional(NonEmpty),
    secretAccessKeyFile: Type.Optional(NonEmpty),
    accessKeyId: Type.Optional(NonEmpty),
    secretAccessKey: Type.Optional(NonEmpty),
    /** Multipart part size; one upload holds at most (queueSize + 1) x partSizeMiB in memory. */
    partSizeMiB: Type.Integer({ minimum: 5, maximum: 512, default: 8 }),
    queueSize: Type.Integer({ minimum: 1, maximum: 16, default: 4 }),
    /** Attempts per request and per part for transient errors (5xx, timeouts, resets). */
    maxAttempts: Type.Integer({ minimum: 1, maximum: 20, default: 5 }),
    /** A request on which no bytes move for this long fails and is retried. */
    idleTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 60 }),
    /**
     * Write every archive and manifest with S3 Object Lock retention. The bucket must have been
     * created with Object Lock enabled. Retention never deletes an object that is still locked.
     */
    objectLock: Type.Optional(
      Type.Object(
        {
          mode: Type.Union([Type.Literal('GOVERNANCE'), Type.Literal('COMPLIANCE')]),
          days: Type.Integer({ minimum: 1, maximum: 36500 }),
        },
        Strict,
      ),
    ),
  },
  Strict,
);

/** One store: the local directory store (the default when no store is configured) or S3. */
const StoreSections = {
  fs: Type.Optional(FsStoreSchema),
  s3: Type.Optional(S3StoreSchema),
};

export const StoreSchema = Type.Object(StoreSections, { ...Strict, default: {} });

/** A second store (another bucket, zone or endpoint) that every committed backup is copied to. */
export const SecondaryStoreSchema = Type.Object(StoreSections, Strict);

/**
 * Which backups to keep, like restic's `forget`: the newest `keepLast`, plus the newest backup
 * of each of the last `hourly` hours, `daily` days, `weekly` ISO weeks and `monthly` months that
 * have one (in `timezone`). A backup kept by any rule is kept. The newest backup and the newest
 * verified backup are always kept, and an object still under Object Lock is never deleted.
 */
export const RetentionSchema = Type.Object(
  {
    keepLast: Type.Integer({ minimum: 1, maximum: 100_000, default: 3 }),
    hourly: Type.Integer({ minimum: 0, maximum: 100_000, default: 24 }),
    daily: Type.Integer({ minimum: 0, maximum: 100_000, default: 7 }),
    weekly: Type.Integer({ minimum: 0, maximum: 100_000, default: 4 }),
    monthly: Type.Integer({ minimum: 0, maximum: 100_000, default: 6 }),
    /** Run retention after each successful backup (the daemon also has a prune schedule). */
    afterBackup: Type.Boolean({ default: true }),
  },
  { ...Strict, default: {} },
);

export const CompressionSchema = Type.Object(
  {
    algorithm: Type.Union([Type.Literal('zstd'), Type.Literal('gzip'), Type.Literal('none')], {
      default: 'zstd',
    }),
    /**
     * zstd 1–19, gzip 1–9; default 1 for both. On two cores shared with etcd, zstd 1 keeps up
     * with the snapshot and zstd 3 does not, for about 2 % larger archives.
     */
    level: Type.Optional(Type.Integer({ minimum: 1, maximum: 19 })),
  },
  { ...Strict, default: {} },
);

export const EncryptionSchema = Type.Object(
  {
    /** age X25519 recipients (`age1...`). Public keys only: the daemon never needs an identity. */
    recipients: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
    /** A file of recipients, one per line (`#` comments allowed), like `age -R`. */
    recipientsFile: Type.Optional(NonEmpty),
    /** Identity file (`AGE-SECRET-KEY-1...`), needed only to read backups: deep verify, extract. */
    identityFile: Type.Optional(NonEmpty),
  },
  { ...Strict, default: {} },
);

export const SigningSchema = Type.Object(
  {
    /**
     * The Ed25519 private key (PEM, PKCS#8) that signs each backup's manifest; made by
     * `lifeboat keygen --signing`. Needed where backups are made (every daemon may lead). A host
     * that only verifies or restores needs publicKeyFiles alone.
     */
    keyFile: Type.Optional(NonEmpty),
    /**
     * Public keys (PEM) whose signatures are accepted, besides keyFile's own. While rotating,
     * list the old and the new key.
     */
    publicKeyFiles: Type.Array(NonEmpty, { default: [] }),
    /**
     * Accept backups whose manifest is not signed, and make unsigned backups when keyFile is
     * not set. Off: anyone who can write to the bucket could make an unsigned backup.
     */
    allowUnsigned: Type.Boolean({ default: false }),
  },
  { ...Strict, default: {} },
);

export const BackupSchema = Type.Object(
  {
    /** Manifest-less archives and temp files older than this are removed by cleanup. */
    orphanMinAgeSeconds: Type.Integer({ minimum: 0, default: 3600 }),
    /** Log a progress line this often while streaming. */
    progressIntervalSeconds: Type.Number({ minimum: 0.1, default: 10 }),
    /**
     * A backup is refused when this node's clock is off from the store's by more than this; a
     * backup dated further than this in the future is not trusted as latest (and is flagged).
     */
    maxClockSkewSeconds: Type.Integer({ minimum: 1, maximum: 86400, default: 300 }),
  },
  { ...Strict, default: {} },
);

/** The change log (../changes/): the leader's watch over etcd, committed in segments between full backups. */
export const ChangesSchema = Type.Object(
  {
    /** Off by default: a config without this section changes nothing. */
    enabled: Type.Boolean({ default: false }),
    /** A segment is committed this long after its first event (the most a leader crash loses from the log, which etcd still holds). */
    segmentSeconds: Type.Number({ minimum: 0.1, maximum: 3600, default: 5 }),
    /** ... or as soon as its events reach this many bytes of JSON lines (the bound of the capture buffer). */
    maxSegmentBytes: Type.Integer({ minimum: 1024, maximum: 256 * 1024 * 1024, default: 8 * 1024 * 1024 }),
  },
  { ...Strict, default: {} },
);

export const ToolsSchema = Type.Object(
  {
    etcdutl: Type.String({ minLength: 1, default: 'etcdutl' }),
    /** The etcd server binary, for restore drills (a throwaway member on loopback). */
    etcd: Type.String({ minLength: 1, default: 'etcd' }),
    kubeadm: Type.String({ minLength: 1, default: 'kubeadm' }),
  },
  { ...Strict, default: {} },
);

/** Restore drills: restore a backup into a throwaway etcd and check it. */
export const DrillSchema = Type.Object(
  {
    /** Scratch space for the decrypted snapshot and the restored data dir (about 2x the database). */
    scratchDir: Type.Optional(NonEmpty),
    /** How long the throwaway etcd may take to become healthy. */
    startTimeoutSeconds: Type.Integer({ minimum: 1, maximum: 3600, default: 60 }),
  },
  { ...Strict, default: {} },
);

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

export const ConfigSchema = Type.Object(
  {
    /** Names the cluster in object keys; defaults to `clusterName` of the kubeadm ClusterConfiguration, else `kubernetes`. */
    cluster: Type.Optional(ClusterName),
    /** This node's name, recorded in every manifest; defaults to the host name. */
    node: Type.Optional(NonEmpty),
    etcd: EtcdSchema,
    kit: KitSchema,
    store: StoreSchema,
    secondaryStore: Type.Optional(SecondaryStoreSchema),
    retention: RetentionSchema,
    compression: CompressionSchema,
    encryption: EncryptionSchema,
    signing: SigningSchema,
    backup: BackupSchema,
    changes: ChangesSchema,
    tools: ToolsSchema,
    drill: DrillSchema,
    restore: RestoreSchema,
    daemon: DaemonSchema,
    api: ApiSchema,
    metrics: MetricsSchema,
    log: LogSchema,
    client: ClientSchema,
  },
  { ...Strict, default: {} },
);

export type ConfigInput = Static<typeof ConfigSchema>;

export type CompressionAlgorithm = Static<typeof CompressionSchema>['algorithm'];
export type LogLevel = Static<typeof LogSchema>['level'];

export type StoreConfig =
  | { readonly kind: 'fs'; readonly dir: string }
  | {
      readonly kind: 's3';
      readonly endpoint: string | undefined;
      readonly region: string;
      readonly bucket: string;
      readonly prefix: string;
      readonly forcePathStyle: boolean;
      readonly caFile: string | undefined;
      readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
      readonly partSize: number;
      readonly queueSize: number;
      readonly maxAttempts: number;
      readonly idleTimeoutMs: number;
      readonly objectLock: { readonly mode: 'GOVERNANCE' | 'COMPLIANCE'; readonly days: number } | undefined;
    };

export type Role = 'viewer' | 'operator' | 'restorer';

/** The validated, defaulted, frozen config the rest of the program sees. */
export interface Config {
  readonly cluster: string;
  readonly node: string;
  readonly etcd: Readonly<Static<typeof EtcdSchema>>;
  readonly kit: Readonly<Static<typeof KitSchema>>;
  readonly store: StoreConfig;
  readonly secondaryStore: StoreConfig | undefined;
  readonly retention: Readonly<Static<typeof RetentionSchema>>;
  readonly compression: { readonly algorithm: CompressionAlgorithm; readonly level: number };
  readonly encryption: {
    /** recipients plus those from recipientsFile, validated. */
    readonly recipients: readonly string[];
    readonly identityFile: string | undefined;
  };
  readonly signing: DeepReadonly<Static<typeof SigningSchema>>;
  readonly backup: Readonly<Static<typeof BackupSchema>>;
  readonly changes: Readonly<Static<typeof ChangesSchema>>;
  readonly tools: Readonly<Static<typeof ToolsSchema>>;
  readonly drill: Readonly<Static<typeof DrillSchema>>;
  readonly restore: Readonly<Static<typeof RestoreSchema>>;
  readonly daemon: DeepReadonly<Static<typeof DaemonSchema>>;
  readonly api: DeepReadonly<Static<typeof ApiSchema>>;
  readonly metrics: DeepReadonly<Static<typeof MetricsSchema>>;
  readonly log: { readonly level: LogLevel };
  readonly client: ClientConfig;
}

export type ClientConfig = Readonly<Static<typeof ClientSchema>>;

type DeepReadonly<T> = T extends (infer U)[] ? readonly DeepReadonly<U>[] : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;
