#!/usr/bin/env bash
# Prepares the image's build context: everything the Dockerfile copies from the context, made
# here and not during `docker build`, which then downloads nothing (it only pulls the node and
# etcd base images).
#
#   bash scripts/image-context.sh [--out DIR]    prints DIR on its last line (default .cache/image)
#
# DIR gets exactly:
#   dist/          tsc -p tsconfig.build.json (what `npm run build` runs) without source maps;
#                  cli/main.js executable
#   package.json   `lifeboat --version` reads it
#   node_modules/  the production dependencies: npm ci --omit=dev --ignore-scripts, the lock
#                  file's packages, all JavaScript (no binary), so one folder serves every
#                  architecture the image is built for
# No Node: the image's only one is its base image's. Every file is world-readable and every
# folder world-searchable (the image runs as uid 65532 and owns none of them). scripts/release.sh
# uses the same folder as the release archive's lib/. DIR is replaced as a whole; a DIR that holds
# anything else is refused.
#
# Cached machine-wide (LIFEBOAT_CACHE, default ~/.cache/lifeboat, under image-context/, the three
# newest kept), keyed by a hash of what goes in (src/, package.json, package-lock.json, the
# tsconfigs, this script), so a second run only checks and copies. Needs `npm ci` first (for tsc)
# and, when the cache misses, the npm registry or npm's own cache for the lock file's packages.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
self="$root/scripts/image-context.sh"
cd "$root"
out="$root/.cache/image"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { echo "image-context: --out needs a directory" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,23p' "$self" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "image-context: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

tsc="$root/node_modules/typescript/bin/tsc"
[ -f "$tsc" ] || { echo "image-context: $tsc is missing: run npm ci first" >&2; exit 1; }
# The Node that compiles does not go into the image; any Node that runs tsc will do.
node_bin="$root/node_modules/node/bin/node"
[ -x "$node_bin" ] || node_bin="$(command -v node)" || { echo "image-context: no node to run tsc with" >&2; exit 1; }

# DIR is replaced, so it must be absent, empty, or an earlier output of this script.
if [ -e "$out" ] || [ -L "$out" ]; then
  if [ -L "$out" ] || [ ! -d "$out" ]; then echo "image-context: $out is not a directory" >&2; exit 1; fi
  other="$(find "$out" -mindepth 1 -maxdepth 1 ! -name dist ! -name node_modules ! -name package.json -print -quit)"
  [ -z "$other" ] || { echo "image-context: $out holds $other: not replacing it" >&2; exit 1; }
fi

key="$( {
  sha256sum "$self" package.json package-lock.json tsconfig.json tsconfig.build.json | cut -d' ' -f1
  find src -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)"
cache_root="${LIFEBOAT_CACHE:-$HOME/.cache/lifeboat}/image-context"
cache="$cache_root/$key"
mkdir -p "$cache_root"
if [ -f "$cache/package.json" ]; then
  echo "image-context: cached ($cache)" >&2
else
  start=$SECONDS
  tmp="$(mktemp -d "$cache_root/.tmp.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  "$node_bin" "$tsc" -p tsconfig.build.json --outDir "$tmp/dist" --sourceMap false >&2
  cp package.json package-lock.json "$tmp/"
  (cd "$tmp" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  rm "$tmp/package-lock.json"
  chmod -R u+rwX,go+rX,go-w "$tmp"
  chmod 0755 "$tmp/dist/cli/main.js"
  # Another run may have filled the same key meanwhile: its folder is as good as this one.
  mv -T "$tmp" "$cache" 2>/dev/null || rm -rf "$tmp"
  trap - EXIT
  echo "image-context: built in $((SECONDS - start)) s ($(du -sh "$cache" | cut -f1))" >&2
  # Each change to src/ makes a new entry (about 85 MB): keep the three newest.
  find "$cache_root" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
fi

mkdir -p "$(dirname "$out")"
next="$(mktemp -d "$(dirname "$out")/.image-context.XXXXXX")"
trap 'rm -rf "$next"' EXIT
cp -a "$cache/." "$next/"
chmod 0755 "$next"
rm -rf "$out"
mv -T "$next" "$out"
trap - EXIT
echo "$out"
