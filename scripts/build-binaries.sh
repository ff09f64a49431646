#!/usr/bin/env bash
# Builds the real etcd 3.6, etcd 3.5 and Kubernetes binaries pinned in scripts/versions.env from
# their Go modules, into a machine-wide cache keyed by version (LIFEBOAT_CACHE, default
# ~/.cache/lifeboat), and links them into .cache/ in the checkout. A second run, in any clone,
# only checks. Needs Go (PATH or /usr/local/go) and the Go module proxy.
#
#   .cache/etcd-3.6/bin/{etcd,etcdctl,etcdutl}      etcd ETCD_36
#   .cache/etcd-3.5/bin/{etcd,etcdctl,etcdutl}      etcd ETCD_35
#   .cache/kubernetes/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubeadm,kubectl}
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=versions.env
. "$root/scripts/versions.env"
cache="${LIFEBOAT_CACHE:-$HOME/.cache/lifeboat}"
export PATH="$PATH:/usr/local/go/bin"
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$cache" "$root/.cache"
command -v go >/dev/null || { echo "build-binaries: Go is not installed (looked in PATH and /usr/local/go/bin)" >&2; exit 1; }

# link NAME DIR: .cache/NAME points at DIR in the machine-wide cache.
link() {
  local at="$root/.cache/$1"
  [ -L "$at" ] || rm -rf "$at"
  ln -sfn "$2" "$at"
}

# module_dir DIR: a scratch Go module in DIR, for building other modules' main packages.
module_dir() {
  rm -rf "$1" && mkdir -p "$1" && (cd "$1" && go mod init lifeboat.invalid/build >/dev/null 2>&1)
}

build_etcd() { # build_etcd VERSION LINKNAME
  local v="$1" out="$cache/etcd-$1" start=$SECONDS
  if [ ! -x "$out/bin/etcdutl" ]; then
    echo "build-binaries: building etcd v$v (etcd, etcdctl, etcdutl)"
    local work="$out.work"
    module_dir "$work"
    (cd "$work" &&
      go get "go.etcd.io/etcd/server/v3@v$v" "go.etcd.io/etcd/etcdutl/v3@v$v" "go.etcd.io/etcd/etcdctl/v3@v$v" >/dev/null 2>&1 &&
      mkdir -p bin &&
      go build -trimpath -ldflags='-s -w' -o bin/etcd go.etcd.io/etcd/server/v3 &&
      go build -trimpath -ldflags='-s -w' -o bin/etcdutl go.etcd.io/etcd/etcdutl/v3 &&
      go build -trimpath -ldflags='-s -w' -o bin/etcdctl go.etcd.io/etcd/etcdctl/v3)
    rm -rf "$out" && mkdir -p "$out" && mv "$work/bin" "$out/bin" && rm -rf "$work"
    echo "build-binaries: etcd v$v built in $((SECONDS - start)) s"
  fi
  link "$2" "$out"
  "$out/bin/etcd" --version | sed -n 1p
}

build_kubernetes() {
  local v="$KUBERNETES" out="$cache/kubernetes-$KUBERNETES" start=$SECONDS
  local minor="${v#*.}"; minor="${minor%%.*}"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubeadm kubectl)
  if [ ! -x "$out/bin/kubectl" ]; then
    echo "build-binaries: building Kubernetes v$v (${cmds[*]}); a cold build takes tens of minutes"
    local work="$out.work"
    module_dir "$work"
    cd "$work"
    go mod download -json "k8s.io/kubernetes@v$v" >download.json
    local gomod
    gomod="$(sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p' download.json)"
    # k8s.io/kubernetes requires its staging modules at v0.0.0; each is published as v0.M.P.
    local staging
    staging="$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")"
    for m in $staging; do go mod edit -replace "$m=$m@v0.${v#*.}"; done
    go mod edit -require "k8s.io/kubernetes@v$v"
    local pkgs=()
    # With the version: a bare package path means @upgrade, the newest release.
    for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c@v$v"); done
    go get "${pkgs[@]}" >/dev/null 2>&1 || go get "${pkgs[@]}"
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=v$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
      ld+=" -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    mkdir -p bin
    for c in "${cmds[@]}"; do
      go build -trimpath -ldflags="$ld" -o "bin/$c" "k8s.io/kubernetes/cmd/$c"
      echo "build-binaries: $c built ($((SECONDS - start)) s so far)"
    done
    cd "$root"
    rm -rf "$out" && mkdir -p "$out" && mv "$work/bin" "$out/bin" && rm -rf "$work"
    echo "build-binaries: Kubernetes v$v built in $((SECONDS - start)) s"
  fi
  link kubernetes "$out"
  "$out/bin/kubeadm" version -o short
}

build_etcd "$ETCD_36" etcd-3.6
build_etcd "$ETCD_35" etcd-3.5
build_kubernetes
