#!/usr/bin/env bash
# The scale benchmark (a benchmark, not a test): a fresh etcd + kube-apiserver (slipway-testenv), Slipway's CRDs,
# one `slipway manager` (release build, sim provider at zero delay, no leader election), then bench-scale creates
# N clusters (control plane 1 + one pool of 3) and prints one markdown report: seconds until all are Ready,
# apiserver requests by verb, the manager's peak RSS and CPU seconds, and its writes during a steady window.
#   hack/bench-scale.sh N [bench-scale flags, e.g. --steady-seconds 30]
# Everything runs in a temporary directory that is removed afterwards; when the run fails it is kept, with the
# apiserver's and the manager's logs in it. Results and how to read them: docs/benchmarks.md.
set -euo pipefail

usage="usage: hack/bench-scale.sh N [bench-scale flags]   (N: how many clusters, e.g. 100 or 1000)"
clusters="${1:-}"
if [[ ! "$clusters" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi
shift

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
release="$CARGO_TARGET_DIR/release"

fail() { echo "error: $*" >&2; exit 1; }

hack/build-k8s.sh >&2 || fail "hack/build-k8s.sh could not build the control-plane binaries"
# shellcheck source=hack/versions.env
source hack/versions.env
apiserver_bin="$cache/k8s/$KUBERNETES_VERSION/bin/kube-apiserver"
echo "building slipway, slipway-testenv and bench-scale (release) ..." >&2
cargo build --quiet --release -p slipway -p slipway-testenv -p slipway-e2e ||
  fail "cargo build --release failed"
command -v kubectl >/dev/null || fail "kubectl is not on PATH; it installs the CRDs"

work="$(mktemp -d -t slipway-bench.XXXXXX)"
testenv_pid=""
manager_pid=""
stop() { # SIGTERM, then wait for the process to exit so its ports and files are free
  local pid="$1"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
cleanup() {
  local status=$?
  stop "$manager_pid"
  stop "$testenv_pid"
  if ((status == 0)); then
    rm -rf "$work"
  else
    echo "the benchmark failed (exit code $status); logs kept in $work (testenv.log, manager.log)" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until `$2` appears in log `$1`, while process `$3` runs; `$4` names what is starting.
wait_for_log() {
  local log="$1" pattern="$2" pid="$3" what="$4"
  for _ in $(seq 1 240); do
    if grep -q "$pattern" "$log" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "error: $what exited while starting; the end of its log:" >&2
      tail -n 30 "$log" >&2
      exit 1
    fi
    sleep 0.25
  done
  echo "error: $what did not start within 60 s; the end of its log:" >&2
  tail -n 30 "$log" >&2
  exit 1
}

echo "starting etcd + kube-apiserver in $work ..." >&2
"$release/slipway-testenv" --dir "$work/apiserver" >"$work/testenv.log" 2>&1 &
testenv_pid=$!
wait_for_log "$work/testenv.log" "control plane ready" "$testenv_pid" "slipway-testenv"
kubeconfig="$work/apiserver/kubeconfig"
[[ -s "$kubeconfig" ]] || fail "slipway-testenv is ready but wrote no kubeconfig at $kubeconfig"

echo "installing Slipway's CRDs ..." >&2
"$release/slipway" crds --stdout | kubectl --kubeconfig "$kubeconfig" apply --server-side -f - >/dev/null ||
  fail "could not apply the CRDs"
kubectl --kubeconfig "$kubeconfig" wait --for condition=established crd --all --timeout=60s >/dev/null ||
  fail "the CRDs did not become Established"

# Port 0: the kernel picks a free port, and the manager logs the address it listens on.
echo "starting slipway manager ..." >&2
KUBECONFIG="$kubeconfig" RUST_LOG="${RUST_LOG:-info}" "$release/slipway" manager \
  --enable-provider sim --leader-elect=false --metrics-addr 127.0.0.1:0 --log-format json >"$work/manager.log" 2>&1 &
manager_pid=$!
wait_for_log "$work/manager.log" "serving /metrics" "$manager_pid" "slipway manager"
metrics_addr="$(sed -n 's/.*"serving \/metrics.*"addr":"\([0-9.:]*\)".*/\1/p; s/.*"addr":"\([0-9.:]*\)".*"serving \/metrics.*/\1/p' \
  "$work/manager.log" | head -n 1)"
[[ -n "$metrics_addr" ]] || fail "could not read the manager's metrics address from $work/manager.log"

if revision="$(git rev-parse --short HEAD 2>/dev/null)"; then
  git diff --quiet HEAD 2>/dev/null || revision+=" with uncommitted changes"
else
  revision="unknown (not a git checkout)"
fi
cat <<HEADER
# hack/bench-scale.sh $clusters $*

- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, $(uname -sr); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)
- versions: $("$apiserver_bin" --version), etcd $ETCD_VERSION, slipway $revision

HEADER

"$release/bench-scale" --clusters "$clusters" --kubeconfig "$kubeconfig" --manager-pid "$manager_pid" \
  --manager-metrics-addr "$metrics_addr" "$@"
