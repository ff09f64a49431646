#!/usr/bin/env bash
# Lifeboat's main job on the embedded default, on one machine, from nothing:
#   a local TLS etcd 3.6 (the pinned build; client-cert auth, kubeadm-shaped PKI under a temp /etc/kubernetes),
#   the embedded default store (the local directory /var/lib/lifeboat/backups), one backup, a deep verify with the identity, and the listing.
# Then it stops the etcd it started. Everything lives under $LIFEBOAT_DEMO_DIR
# (default: a new temp dir), which is kept so you can look at it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install-deps.sh
export PATH="$root/node_modules/.bin:$PATH"
# etcdutl of the pinned etcd 3.6 build, resolved where the tests resolve it.
etcdutl="$(node --input-type=module -e 'const { etcdBinaries } = await import("./scripts/rig/binaries.ts"); console.log(etcdBinaries().etcdutl);')"

demo="${LIFEBOAT_DEMO_DIR:-$(mktemp -d /tmp/lifeboat-demo.XXXXXX)}"
# lifeboat reads every LIFEBOAT_* variable as a config override: this one is the demo's own.
unset LIFEBOAT_DEMO_DIR
mkdir -p "$demo"
echo "== demo dir: $demo"

node scripts/etcd-rig.ts start --members 1 --dir "$demo/etcd" --populate 2000 >"$demo/rig.out"
trap 'node scripts/etcd-rig.ts stop --dir "$demo/etcd" >/dev/null || true' EXIT
endpoint="$(node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); console.log(r.endpoints.join(","))' "$demo/etcd/rig.json")"
hostroot="$demo/etcd/host"
k8s="$hostroot/etc/kubernetes"
echo "== etcd with TLS at $endpoint, kubeadm-shaped files in $k8s"

lifeboat() { node --max-semi-space-size=1 src/cli/main.ts "$@"; }
export LIFEBOAT_TOOLS__ETCDUTL="$etcdutl"

[ -f "$demo/key.txt" ] || lifeboat keygen --output "$demo/key.txt" >"$demo/recipient.txt"
# The key that signs each manifest; verify and restore check the signature before anything else.
[ -f "$demo/signing.key" ] || lifeboat keygen --signing --output "$demo/signing.key" >/dev/null
cat >"$demo/lifeboat.yaml" <<YAML
cluster: demo
etcd:
  endpoints: [${endpoint}]
  tls:
    caFile: $k8s/pki/etcd/ca.crt
    certFile: $k8s/pki/etcd/healthcheck-client.crt
    keyFile: $k8s/pki/etcd/healthcheck-client.key
kit:
  hostRoot: $hostroot
encryption:
  recipients: [$(cat "$demo/recipient.txt")]
signing:
  keyFile: $demo/signing.key
YAML
echo "== config: $demo/lifeboat.yaml"

echo "== lifeboat backup"
lifeboat --config "$demo/lifeboat.yaml" backup
echo "== lifeboat verify latest --identity key.txt"
lifeboat --config "$demo/lifeboat.yaml" --log-level warn verify latest --identity "$demo/key.txt"
echo "== lifeboat list"
lifeboat --config "$demo/lifeboat.yaml" list
