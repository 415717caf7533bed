#!/usr/bin/env bash
# The scale benchmark (a benchmark, not a test), in two parts, each on its own fresh etcd + kube-apiserver
# (slipway-testenv) with Slipway's CRDs:
#   1. the floor: bench-floor, with no manager, sends the writes a provisioner cannot avoid for N sim clusters as
#      fast as the apiserver accepts them (hack/bench-floor.sh runs only this part);
#   2. Slipway: one `slipway manager` (release build, sim provider at zero delay, no leader election), then
#      bench-scale creates N clusters (control plane 1 + one pool of 3), waits until all are Ready, holds the fleet
#      for --hold seconds (60 by default) and prints one markdown report: seconds until all are Ready next to the
#      floor's, apiserver requests by verb, the manager's peak RSS and CPU seconds, and its writes, RSS (every 10 s)
#      and CPU during the hold. The floor's own report follows.
#   hack/bench-scale.sh N [bench-scale flags, e.g. --hold 1800]
# Everything runs in a temporary directory that is removed afterwards; when the run fails it is kept, with the
# apiservers' and the manager's logs in it. Results and how to read them: docs/benchmarks.md.
set -euo pipefail

usage="usage: hack/bench-scale.sh N [bench-scale flags]   (N: how many clusters, e.g. 100 or 1000)"
clusters="${1:-}"
if [[ ! "$clusters" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi
shift

# shellcheck source=hack/bench-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"

# Before anything runs, so the load average is the machine's, not the benchmark's.
print_header "hack/bench-scale.sh $clusters $*"

echo "the floor: $clusters clusters' unavoidable writes, no manager ..." >&2
start_apiserver floor-apiserver
"$bin/bench-floor" --clusters "$clusters" --kubeconfig "$kubeconfig" --json "$work/floor.json" >"$work/floor.md" ||
  fail "bench-floor failed"
stop_apiserver

start_apiserver apiserver
# Port 0: the kernel picks a free port, and the manager logs the address it listens on.
echo "starting slipway manager ..." >&2
KUBECONFIG="$kubeconfig" RUST_LOG="${RUST_LOG:-info}" "$bin/slipway" manager \
  --enable-provider sim --leader-elect=false --metrics-addr 127.0.0.1:0 --log-format json >"$work/manager.log" 2>&1 &
manager_pid=$!
wait_for_log "$work/manager.log" "serving /metrics" "$manager_pid" "slipway manager"
metrics_addr="$(sed -n 's/.*"serving \/metrics.*"addr":"\([0-9.:]*\)".*/\1/p; s/.*"addr":"\([0-9.:]*\)".*"serving \/metrics.*/\1/p' \
  "$work/manager.log" | head -n 1)"
[[ -n "$metrics_addr" ]] || fail "could not read the manager's metrics address from $work/manager.log"

"$bin/bench-scale" --clusters "$clusters" --kubeconfig "$kubeconfig" --manager-pid "$manager_pid" \
  --manager-metrics-addr "$metrics_addr" --floor-result "$work/floor.json" "$@"
echo
cat "$work/floor.md"
