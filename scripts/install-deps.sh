#!/usr/bin/env bash
# Installs everything Lifeboat's demo, tests and benchmarks need on a Debian bookworm machine.
# Run as root. Idempotent: a second run only checks.
#
#   - Debian packages: age (the stock age CLI), etcd-server/etcd-client 3.4 (bookworm),
#     ceph-mon, ceph-osd, radosgw and ceph-common (a real Ceph RGW for the S3 tests),
#     prometheus (promtool and a real Prometheus for the alert and scrape tests), s3cmd (the
#     shell pipeline the S3 benchmark compares against),
#     zstd and tar (the manual-restore recipe), libcap2-bin (the Dockerfile test checks its setcap),
#     and kubernetes-client when no kubectl is installed (the deploy/ tests render with it).
#   - etcd 3.5 with etcdutl from Debian trixie, unpacked into .cache/etcd-3.5/ without touching
#     the system's apt configuration (the binaries only link libc, so they run on bookworm).
#   - npm packages (npm ci), which include Node 24 as a dev dependency.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

need_apt=()
for pkg in age etcd-server etcd-client zstd tar ca-certificates ceph-mon ceph-osd radosgw ceph-common prometheus s3cmd libcap2-bin; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# kubectl renders deploy/ in the tests; any recent one will do (Debian's kubernetes-client if none).
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

etcd35="$root/.cache/etcd-3.5"
if [ ! -x "$etcd35/usr/bin/etcdutl" ]; then
  echo "install-deps: fetching etcd 3.5 (etcd-server, etcd-client) from Debian trixie"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # The mirror already configured for bookworm also serves trixie.
  mirror="$(awk '/^#/ {next} $1 == "URIs:" {print $2; exit} $1 == "deb" && $2 !~ /^\[/ {print $2; exit}' \
    /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} trixie main" >"$work/sources.list"
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  aptopts=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
  apt-get "${aptopts[@]}" -qq update
  (cd "$work" && apt-get "${aptopts[@]}" -qq download etcd-server/trixie etcd-client/trixie)
  rm -rf "$etcd35.tmp" && mkdir -p "$etcd35.tmp"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$etcd35.tmp"; done
  rm -rf "$etcd35" && mv "$etcd35.tmp" "$etcd35"
fi
"$etcd35/usr/bin/etcdutl" version | head -n 1

if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "install-deps: npm ci"
  npm ci --no-fund --no-audit --loglevel=error
fi
echo "install-deps: ready (node $(node_modules/.bin/node --version), $(etcd --version | head -n 1), age $(age --version))"
