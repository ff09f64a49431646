import { Type, type Static } from '@sinclair/typebox';
import { NonEmpty, Strict } from './schema-parts.ts';
import { ApiSchema, ClientSchema, DaemonSchema, LogSchema, MetricsSchema, RestoreSchema } from './service-schema.ts';

export { ApiSchema, ClientSchema, DaemonSchema, LogSchema, MetricsSchema, RestoreSchema };

/**
 * The one config file, as YAML. Every default here is kubeadm's or the embedded default, so an
 * empty file (plus age recipients) backs up a kubeadm control-plane node to the local directory
 * store. The serving side's sections (restore, daemon, api, metrics, client, log) are in
 * service-schema.ts.
 */

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
    /**
     * Off by default. On: the elected leader, and only it, captures every etcd change into
     * segments in the primary store (../daemon/change-log.ts); retention prunes them with the
     * backups, and GET /v1/changes and `lifeboat changes log` read them.
     */
    enabled: Type.Boolean({ default: false }),
    /** A segment is committed this long after its first event (the most a leader crash loses from the log, which etcd still holds). */
    segmentSeconds: Type.Number({ minimum: 0.1, maximum: 3600, default: 5 }),
    /** ... or as soon as its events reach this many bytes of JSON lines (the bound of the capture buffer). */
    maxSegmentBytes: Type.Integer({ minimum: 1024, maximum: 256 * 1024 * 1024, default: 8 * 1024 * 1024 }),
    /**
     * A replay (a point-in-time restore, `lifeboat changes replay`) grants each lease the change
     * log names again with this TTL, so that its keys (Kubernetes Events, master leases) expire
     * after the restore instead of living forever.
     */
    replayLeaseTtlSeconds: Type.Integer({ minimum: 5, maximum: 86_400, default: 3600 }),
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
    /**
     * A drill also replays the change log after the backup (../changes/drill-replay.ts), up to
     * the newest revision it holds, and compares every key with the live cluster at that
     * revision. Nothing happens when the store holds no change log after the backup.
     */
    changeLog: Type.Boolean({ default: true }),
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
  /** Where this process runs, as its environment says (not a setting). */
  readonly runtime: {
    /** In a Kubernetes pod (KUBERNETES_SERVICE_HOST is set), as the DaemonSet runs it. */
    readonly inPod: boolean;
  };
}

export type ClientConfig = Readonly<Static<typeof ClientSchema>>;

type DeepReadonly<T> = T extends (infer U)[] ? readonly DeepReadonly<U>[] : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;
