#!/usr/bin/env bash
# Installs everything Lifeboat's demo, tests and benchmarks need on a Debian bookworm machine.
# Run as root. Idempotent: a second run only checks.
#
#   - Debian packages: age (the stock age CLI), zstd and tar (the manual-restore recipe),
#     ceph-mon, ceph-osd, radosgw and ceph-common (a real Ceph RGW for the S3 tests),
#     prometheus (promtool and a real Prometheus for the alert and scrape tests),
#     prometheus-alertmanager (a real Alertmanager and amtool for the alert delivery test), s3cmd (the
#     shell pipeline the S3 benchmark compares against), libcap2-bin (the Dockerfile test checks
#     its setcap), iproute2, util-linux and openssl (the test lab's namespaces, and its kubelet's
#     certificate signing request), curl (the API tests).
#   - etcd 3.6 and 3.5 (etcd, etcdctl, etcdutl) and Kubernetes (kube-apiserver,
#     kube-controller-manager, kube-scheduler, kubeadm, kubectl) at the versions pinned in
#     scripts/versions.env, built from their Go modules by scripts/build-binaries.sh (needs Go in
#     PATH or /usr/local/go) into a machine-wide cache and linked into .cache/. The tests resolve
#     them through scripts/rig/binaries.ts; nothing is installed into PATH. etcd 3.4 is no
#     longer tested (it is end-of-life).
#   - npm packages (npm ci), which include Node 24 as a dev dependency.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need_apt=()
for pkg in age zstd tar ca-certificates ceph-mon ceph-osd radosgw ceph-common prometheus prometheus-alertmanager s3cmd libcap2-bin iproute2 util-linux openssl curl; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The tests start their own Prometheus and Alertmanager on free ports; the services these
  # packages enable (on :9090 and :9093) are not needed. Only what this run installed is touched.
  if [ -d /run/systemd/system ]; then
    for svc in prometheus prometheus-alertmanager; do
      if [[ " ${need_apt[*]} " == *" $svc "* ]]; then systemctl disable --now "$svc" >/dev/null 2>&1 || true; fi
    done
  fi
fi

bash "$root/scripts/build-binaries.sh"

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-fund --no-audit --loglevel=error
fi
etcd_version() { "$root/.cache/etcd-$1/bin/etcd" --version | sed -n 1p; }
echo "install-deps: ready (node $(node_modules/.bin/node --version), $(etcd_version 3.6), $(etcd_version 3.5), age $(age --version))"
