#!/usr/bin/env bash
# Builds the release archive: Lifeboat for a host with no cluster and no container runtime (the
# host that restores a lost control plane), as one file that needs nothing else installed.
#
#   bash scripts/release.sh [--out DIR]      prints the archive's path on its last line
#
# lifeboat-<version>-linux-<arch>.tar.gz holds one folder, lifeboat/:
#   bin/lifeboat   the command (a sh wrapper: runs lib/dist/cli/main.js with bin/node, and puts
#                  bin/ first in PATH so that Lifeboat finds etcdutl and etcd there)
#   bin/node       Node 24 (the node@24 package's binary this checkout runs)
#   bin/etcdutl, bin/etcd, bin/etcdctl
#                  etcd 3.6 (scripts/versions.env), static Go binaries built by build-binaries.sh
#   lib/           dist/ (tsc), package.json and the production node_modules (npm ci --omit=dev):
#                  the folder scripts/image-context.sh makes, the same as the image's
#   VERSIONS       what is inside, one `name version` per line
# Extract it anywhere (`tar -xzf ... -C /opt` gives /opt/lifeboat/bin/lifeboat). It runs on any
# x86-64 glibc Linux that Node 24 runs on.
#
# The archive is cached machine-wide (LIFEBOAT_CACHE, default ~/.cache/lifeboat, under release/,
# the three newest kept), keyed by a hash of everything in it, so a second run only checks. Needs
# `bash scripts/install-deps.sh` first (Node 24, the etcd binaries).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out="$root/.cache/release"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "release: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

# shellcheck source=versions.env
. "$root/scripts/versions.env"
node_bin="$root/node_modules/node/bin/node"
etcd_dir="$root/.cache/etcd-3.6/bin"
for f in "$node_bin" "$etcd_dir/etcd" "$etcd_dir/etcdutl" "$etcd_dir/etcdctl"; do
  [ -x "$f" ] || { echo "release: $f is missing: run bash scripts/install-deps.sh first" >&2; exit 1; }
done
version="$("$node_bin" -p 'require("./package.json").version')"
node_version="$("$node_bin" --version)"
arch="$(uname -m | sed 's/x86_64/x64/; s/aarch64/arm64/')"
name="lifeboat-$version-linux-$arch.tar.gz"

key="$( {
  echo "$version $node_version $ETCD_36 $arch"
  sha256sum "$node_bin" "$etcd_dir/etcd" "$etcd_dir/etcdutl" "$etcd_dir/etcdctl" "$0" scripts/image-context.sh package.json package-lock.json tsconfig.json tsconfig.build.json | cut -d' ' -f1
  find src -type f | LC_ALL=C sort | xargs sha256sum
} | sha256sum | cut -c1-16)"
cache="${LIFEBOAT_CACHE:-$HOME/.cache/lifeboat}/release/$key"
mkdir -p "$out"
if [ -s "$cache/$name" ]; then
  echo "release: $name is cached ($cache)" >&2
else
  start=$SECONDS
  stage="$(mktemp -d)"
  trap 'rm -rf "$stage"' EXIT
  top="$stage/lifeboat"
  mkdir -p "$top/bin"
  bash "$root/scripts/image-context.sh" --out "$top/lib" >/dev/null
  cp "$node_bin" "$top/bin/node"
  cp "$etcd_dir/etcd" "$etcd_dir/etcdutl" "$etcd_dir/etcdctl" "$top/bin/"
  cat > "$top/bin/lifeboat" <<'EOF'
#!/bin/sh
# Lifeboat from the release archive: its own Node, and its etcd tools first in PATH.
here="$(dirname "$(readlink -f "$0")")"
PATH="$here:$PATH" exec "$here/node" --max-semi-space-size=1 "$here/../lib/dist/cli/main.js" "$@"
EOF
  chmod 0755 "$top/bin/lifeboat"
  printf 'lifeboat %s\nnode %s\netcd %s\n' "$version" "${node_version#v}" "$ETCD_36" > "$top/VERSIONS"
  mkdir -p "$cache"
  tar -C "$stage" --owner=0 --group=0 -czf "$cache/$name.tmp" lifeboat
  mv "$cache/$name.tmp" "$cache/$name"
  echo "release: built $name in $((SECONDS - start)) s ($(du -h "$cache/$name" | cut -f1))" >&2
  # Each change to src/ makes a new archive (about 75 MB): keep the three newest.
  find "$(dirname "$cache")" -mindepth 1 -maxdepth 1 -type d -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
fi
cp "$cache/$name" "$out/$name.tmp"
mv "$out/$name.tmp" "$out/$name"
echo "$out/$name"
