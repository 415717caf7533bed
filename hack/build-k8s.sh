#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries that Slipway's tests run against, from the Go module proxy,
# into ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/k8s/<kubernetes version>/bin/. Versions come from hack/versions.env:
# KUBERNETES_VERSION gets etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (plus the kwok
# stages in k8s/<version>/kwok/); KUBERNETES_PREVIOUS_VERSION, the minor before, gets its own kube-apiserver,
# kube-controller-manager and kube-scheduler, and the same etcd, kwok and stages linked in, so either directory is a
# complete control plane for upgrade tests. Binaries already built at the pinned version are reused, so a second
# run takes seconds.
#
# k8s.io/kubernetes cannot be built with `go install pkg@version`: its go.mod points the k8s.io/* staging modules at
# v0.0.0 with local replaces. A small wrapper module, generated in the cache (never in the repo), requires
# k8s.io/kubernetes and replaces every staging module with its published v0.MINOR.PATCH. etcd gets a wrapper too,
# because its own go.mod carries replaces that `go install` refuses.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$here/versions.env"

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed or not on PATH; hack/build-k8s.sh needs Go >= 1.26 to build kube-apiserver, etcd and kwok." >&2
  echo "       Install Go (https://go.dev/doc/install), then run: hack/build-k8s.sh" >&2
  exit 1
fi

cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
out="$cache/k8s/$KUBERNETES_VERSION"
bin="$out/bin"
previous_out="$cache/k8s/$KUBERNETES_PREVIOUS_VERSION"
previous_bin="$previous_out/bin"
mkdir -p "$bin" "$previous_bin"

# A binary is reused when it exists and its stamp (next to it) names the pinned version.
is_built() { [[ -x "$1/$2" && "$(cat "$1/.$2.version" 2>/dev/null)" == "$3" ]]; }
stamp() { echo "$3" >"$1/.$2.version"; }

elapsed() { echo $(( $(date +%s) - $1 ))s; }

# build_kubernetes VERSION: kube-apiserver, kube-controller-manager and kube-scheduler into k8s/VERSION/bin.
build_kubernetes() {
  local version="$1"
  local out="$cache/k8s/$version"
  local bin="$out/bin"
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler) missing=() b
  for b in "${wanted[@]}"; do is_built "$bin" "$b" "$version" || missing+=("$b"); done
  if ((${#missing[@]} == 0)); then
    echo "kubernetes $version: up to date (${wanted[*]})"
    return
  fi
  local src="$out/src/kubernetes" minor staging_version start
  minor="${version#v1.}"; minor="${minor%%.*}"
  staging_version="v0.${version#v1.}"
  mkdir -p "$src"
  echo "kubernetes $version: preparing wrapper module in $src"
  (
    cd "$src"
    local modfile
    modfile="$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    {
      echo "module slipway.local/build/kubernetes"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $version"
      echo
      # The staging modules are exactly the ones kubernetes' own go.mod replaces with ./staging/ paths.
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9./-]*\) => ./staging/.*#\1#p' "$modfile" | sort -u |
        while read -r m; do echo "replace $m => $m $staging_version"; done
      echo
      for b in "${wanted[@]}"; do echo "tool k8s.io/kubernetes/cmd/$b"; done
    } >go.mod
    go mod tidy
  )
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  for b in "${missing[@]}"; do
    echo "kubernetes $version: building $b ..."
    start=$(date +%s)
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bin/$b" "k8s.io/kubernetes/cmd/$b")
    stamp "$bin" "$b" "$version"
    echo "kubernetes $version: built $b in $(elapsed "$start")"
  done
}

build_etcd() {
  if is_built "$bin" etcd "$ETCD_VERSION"; then
    echo "etcd $ETCD_VERSION: up to date"
    return
  fi
  local src="$out/src/etcd" start
  mkdir -p "$src"
  echo "etcd $ETCD_VERSION: building ..."
  start=$(date +%s)
  (
    cd "$src"
    printf 'module slipway.local/build/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n\ntool go.etcd.io/etcd/server/v3\n' \
      "$ETCD_VERSION" >go.mod
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
  )
  stamp "$bin" etcd "$ETCD_VERSION"
  echo "etcd $ETCD_VERSION: built in $(elapsed "$start")"
}

build_kwok() {
  if is_built "$bin" kwok "$KWOK_VERSION"; then
    echo "kwok $KWOK_VERSION: up to date"
    return
  fi
  local start
  echo "kwok $KWOK_VERSION: building ..."
  start=$(date +%s)
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  stamp "$bin" kwok "$KWOK_VERSION"
  echo "kwok $KWOK_VERSION: built in $(elapsed "$start")"
}

# kwok does nothing without Stage objects that say how fake nodes and pods progress. Its release ships them as
# kustomize files in its module; gather the "fast" ones (plus the lease heartbeat) from the Go module cache into
# one config file next to the binaries, so testenv passes it with --config.
kwok_stages() {
  local stages="$out/kwok/stages.yaml" module
  if [[ -s "$stages" && "$(cat "$out/kwok/.version" 2>/dev/null)" == "$KWOK_VERSION" ]]; then
    return
  fi
  module="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  mkdir -p "$out/kwok"
  local f first=1
  : >"$stages.tmp"
  for f in "$module"/kustomize/stage/node/fast/node-initialize.yaml \
    "$module"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$module"/kustomize/stage/pod/fast/pod-*.yaml; do
    ((first)) || echo "---" >>"$stages.tmp"
    first=0
    cat "$f" >>"$stages.tmp"
  done
  mv "$stages.tmp" "$stages"
  echo "$KWOK_VERSION" >"$out/kwok/.version"
  echo "kwok $KWOK_VERSION: stages written to $stages"
}

# The previous minor's directory gets the same etcd and kwok (hard links where the file system allows, copies
# otherwise) and the same kwok stages: etcd v3.6 serves both minors, and kwok only speaks the Kubernetes API.
share_with_previous() {
  local b version
  for b in etcd kwok; do
    version="$(cat "$bin/.$b.version")"
    if ! is_built "$previous_bin" "$b" "$version"; then
      ln -f "$bin/$b" "$previous_bin/$b" 2>/dev/null || cp -f "$bin/$b" "$previous_bin/$b"
      stamp "$previous_bin" "$b" "$version"
      echo "$b $version: shared with $previous_bin"
    fi
  done
  if ! cmp -s "$out/kwok/stages.yaml" "$previous_out/kwok/stages.yaml"; then
    mkdir -p "$previous_out/kwok"
    cp -f "$out/kwok/stages.yaml" "$previous_out/kwok/stages.yaml"
    echo "kwok $KWOK_VERSION: stages copied to $previous_out/kwok/stages.yaml"
  fi
}

total_start=$(date +%s)
build_etcd
build_kubernetes "$KUBERNETES_VERSION"
build_kwok
kwok_stages
echo "control-plane binaries ready in $bin ($(elapsed "$total_start"))"
previous_start=$(date +%s)
build_kubernetes "$KUBERNETES_PREVIOUS_VERSION"
share_with_previous
echo "previous-minor control-plane binaries ready in $previous_bin ($(elapsed "$previous_start"))"
