#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries that Slipway's tests run against, from the Go module proxy,
# into ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/k8s/<kubernetes version>/bin/. Versions come from hack/versions.env.
# Binaries already built at the pinned version are reused, so a second run takes seconds.
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
mkdir -p "$bin"

# A binary is reused when it exists and its stamp names the pinned version.
is_built() { [[ -x "$bin/$1" && "$(cat "$bin/.$1.version" 2>/dev/null)" == "$2" ]]; }
stamp() { echo "$2" >"$bin/.$1.version"; }

elapsed() { echo $(( $(date +%s) - $1 ))s; }

build_kubernetes() {
  local wanted=(kube-apiserver kube-controller-manager kube-scheduler) missing=() b
  for b in "${wanted[@]}"; do is_built "$b" "$KUBERNETES_VERSION" || missing+=("$b"); done
  if ((${#missing[@]} == 0)); then
    echo "kubernetes $KUBERNETES_VERSION: up to date (${wanted[*]})"
    return
  fi
  local src="$out/src/kubernetes" minor staging_version start
  minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  staging_version="v0.${KUBERNETES_VERSION#v1.}"
  mkdir -p "$src"
  echo "kubernetes $KUBERNETES_VERSION: preparing wrapper module in $src"
  (
    cd "$src"
    local modfile
    modfile="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    {
      echo "module slipway.local/build/kubernetes"
      echo
      echo "go 1.26"
      echo
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      echo
      # The staging modules are exactly the ones kubernetes' own go.mod replaces with ./staging/ paths.
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9./-]*\) => ./staging/.*#\1#p' "$modfile" | sort -u |
        while read -r m; do echo "replace $m => $m $staging_version"; done
      echo
      for b in "${wanted[@]}"; do echo "tool k8s.io/kubernetes/cmd/$b"; done
    } >go.mod
    go mod tidy
  )
  local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  for b in "${missing[@]}"; do
    echo "kubernetes $KUBERNETES_VERSION: building $b ..."
    start=$(date +%s)
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bin/$b" "k8s.io/kubernetes/cmd/$b")
    stamp "$b" "$KUBERNETES_VERSION"
    echo "kubernetes $KUBERNETES_VERSION: built $b in $(elapsed "$start")"
  done
}

build_etcd() {
  if is_built etcd "$ETCD_VERSION"; then
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
  stamp etcd "$ETCD_VERSION"
  echo "etcd $ETCD_VERSION: built in $(elapsed "$start")"
}

build_kwok() {
  if is_built kwok "$KWOK_VERSION"; then
    echo "kwok $KWOK_VERSION: up to date"
    return
  fi
  local start
  echo "kwok $KWOK_VERSION: building ..."
  start=$(date +%s)
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  stamp kwok "$KWOK_VERSION"
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

total_start=$(date +%s)
build_etcd
build_kubernetes
build_kwok
kwok_stages
echo "control-plane binaries ready in $bin ($(elapsed "$total_start"))"
