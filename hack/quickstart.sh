#!/usr/bin/env bash
# The quickstart: builds what is missing, starts a local management cluster (etcd + kube-apiserver) in the
# background, and prints how to use it. Running it again while it runs is harmless.
#   hack/quickstart.sh        start (or show) the local management cluster
#   hack/quickstart.sh stop   stop it (its data stays in the state directory)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
state="${SLIPWAY_QUICKSTART_DIR:-$cache/quickstart}"
pidfile="$state/management.pid"
kubeconfig="$state/management/kubeconfig"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if [[ "${1:-}" == "stop" ]]; then
  if running; then
    kill "$(cat "$pidfile")"
    while running; do sleep 0.2; done
    echo "stopped the local management cluster (state kept in $state)"
  else
    echo "the local management cluster is not running"
  fi
  rm -f "$pidfile"
  exit 0
fi

hack/build-k8s.sh
mkdir -p "$state"

if running; then
  echo "the local management cluster is already running (pid $(cat "$pidfile"))"
else
  echo "building slipway-testenv ..."
  cargo build --quiet -p slipway-testenv --bin slipway-testenv
  rm -f "$kubeconfig"
  nohup "$CARGO_TARGET_DIR/debug/slipway-testenv" --dir "$state/management" >"$state/management.log" 2>&1 &
  echo $! >"$pidfile"
  echo -n "starting the local management cluster "
  for _ in $(seq 1 120); do
    if grep -q "control plane ready" "$state/management.log" 2>/dev/null; then break; fi
    if ! running; then
      echo; echo "error: the management cluster exited; its log:" >&2
      tail -n 30 "$state/management.log" >&2
      exit 1
    fi
    echo -n "."; sleep 0.5
  done
  echo
fi

cat <<MSG

Local management cluster: $(sed -n 's/control plane ready at //p' "$state/management.log")
  export KUBECONFIG=$kubeconfig
  kubectl get namespaces

Logs of etcd and kube-apiserver: $state/management/logs/
Stop it with: hack/quickstart.sh stop
MSG
