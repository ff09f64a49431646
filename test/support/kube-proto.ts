/**
 * A tiny protobuf encoder for tests: builds ConfigMap values as the kube-apiserver stores them in
 * etcd (the `k8s\0` magic, then a runtime.Unknown whose raw is a v1.ConfigMap), with an
 * ObjectMeta shaped like a real one (uid, resourceVersion, creationTimestamp, managedFields).
 */

export function varint(n: number | bigint): Buffer {
  let v = BigInt(n);
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}

export function tag(field: number, wire: number): Buffer {
  return varint((BigInt(field) << 3n) | BigInt(wire));
}

/** A length-delimited field (strings, bytes, embedded messages). */
export function bytesField(field: number, value: Buffer | string): Buffer {
  const body = Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8');
  return Buffer.concat([tag(field, 2), varint(body.length), body]);
}

export function varintField(field: number, value: number | bigint): Buffer {
  return Buffer.concat([tag(field, 0), varint(value)]);
}

export const MAGIC = Buffer.from('k8s\0', 'latin1');

export interface ConfigMapSpec {
  name?: string;
  namespace?: string;
  data?: Record<string, string>;
  binaryData?: Record<string, Buffer>;
  immutable?: boolean;
  /** Leave out runtime.Unknown's typeMeta. */
  noTypeMeta?: boolean;
  kind?: string;
  apiVersion?: string;
}

/** A v1.ObjectMeta as the apiserver fills it. */
export function objectMeta(name: string, namespace: string): Buffer {
  const time = Buffer.concat([varintField(1, 1_764_990_000), varintField(2, 0)]);
  const managed = Buffer.concat([
    bytesField(1, 'kubeadm'),
    bytesField(2, 'Update'),
    bytesField(3, 'v1'),
    bytesField(4, time),
    bytesField(6, 'FieldsV1'),
    bytesField(7, bytesField(1, '{"f:data":{".":{},"f:ClusterConfiguration":{}}}')),
  ]);
  return Buffer.concat([
    bytesField(1, name),
    bytesField(3, namespace),
    bytesField(5, '0f5b9c1e-3d27-4a5e-9b0c-2d8f6a1e4c77'),
    bytesField(6, ''),
    varintField(7, 0),
    bytesField(8, time),
    bytesField(17, managed),
  ]);
}

/** The v1.ConfigMap message (runtime.Unknown's raw). */
export function configMapMessage(spec: ConfigMapSpec): Buffer {
  const parts = [bytesField(1, objectMeta(spec.name ?? 'kubeadm-config', spec.namespace ?? 'kube-system'))];
  for (const [k, v] of Object.entries(spec.data ?? {})) parts.push(bytesField(2, Buffer.concat([bytesField(1, k), bytesField(2, v)])));
  for (const [k, v] of Object.entries(spec.binaryData ?? {})) parts.push(bytesField(3, Buffer.concat([bytesField(1, k), bytesField(2, v)])));
  if (spec.immutable !== undefined) parts.push(varintField(4, spec.immutable ? 1 : 0));
  return Buffer.concat(parts);
}

/** The whole stored value: magic + runtime.Unknown{typeMeta, raw, contentEncoding "", contentType ""}. */
export function storedConfigMap(spec: ConfigMapSpec): Buffer {
  const typeMeta = Buffer.concat([bytesField(1, spec.apiVersion ?? 'v1'), bytesField(2, spec.kind ?? 'ConfigMap')]);
  return Buffer.concat([
    MAGIC,
    ...(spec.noTypeMeta ? [] : [bytesField(1, typeMeta)]),
    bytesField(2, configMapMessage(spec)),
    bytesField(3, ''),
    bytesField(4, ''),
  ]);
}

/** A kubeadm v1beta4 ClusterConfiguration as `kubeadm init` uploads it. */
export const CLUSTER_CONFIGURATION = `apiServer: {}
apiVersion: kubeadm.k8s.io/v1beta4
caCertificateValidityPeriod: 87600h0m0s
certificateValidityPeriod: 8760h0m0s
certificatesDir: /etc/kubernetes/pki
clusterName: from-configmap
controlPlaneEndpoint: cp.example.internal:6443
controllerManager: {}
dns: {}
encryptionAlgorithm: RSA-2048
etcd:
  local:
    dataDir: /var/lib/etcd
imageRepository: registry.k8s.io
kind: ClusterConfiguration
kubernetesVersion: v1.37.2
networking:
  dnsDomain: cluster.local
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
proxy: {}
scheduler: {}
`;
