#!/usr/bin/env bash
# The quickstart: on a fresh machine, builds what is missing, starts a local management cluster (etcd +
# kube-apiserver), installs Slipway's CRDs and RBAC, runs the manager on this machine, applies the sample cluster
# (config/samples/local-cluster.yaml: a control plane and 3 kwok nodes, all local processes) and waits until it is
# Ready. Running it again is harmless: what runs is reused.
#
#   hack/quickstart.sh            start everything and wait for the sample cluster
#   hack/quickstart.sh --addons   also install the default add-on bundles (config/addons: flannel, cert-manager,
#                                 external-dns), which download their manifests from the projects' releases
#   hack/quickstart.sh --addons-mirror DIR
#                                 the same bundles, their manifests served from DIR on a loopback port instead (for
#                                 a machine without internet; files are found by name, e.g. kube-flannel.yml, and
#                                 must still match the bundles' sha256 pins)
#   hack/quickstart.sh --ha       apply config/samples/local-ha-cluster.yaml instead: three control-plane members
#                                 (three etcd members, apiservers behind HAProxy); combines with the options above
#   hack/quickstart.sh stop       stop the manager, the workload clusters (deleted through the manager when it runs;
#                                 their local processes stopped in any case) and the management cluster
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
state="${SLIPWAY_QUICKSTART_DIR:-$cache/quickstart}"
management="$state/management"
kubeconfig="$management/kubeconfig"
clusters="$state/clusters"
slipway="$CARGO_TARGET_DIR/debug/slipway"

# Whether the pid in file $1 runs. A killed process whose parent is gone can stay a zombie until something reaps
# it (a container's init may not): that one is not running.
running() {
  [[ -f "$1" ]] || return 1
  local state
  state="$(awk '{ print $3 }' "/proc/$(cat "$1")/stat" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z ]]
}

# The processes the local provider started for the quickstart's workload clusters (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok, HAProxy): each names a file under $clusters/ in its command line
# (its data directory, certificates or configuration). The manager names only $clusters itself.
local_cluster_processes() {
  local pid
  for pid in $(pgrep -f -- "$clusters/" || true); do
    case "$(cat "/proc/$pid/comm" 2>/dev/null)" in
      etcd | kube-apiserver | kube-controller | kube-scheduler | kwok | haproxy) echo "$pid" ;;
    esac
  done
}

stop() {
  if running "$state/manager.pid"; then
    # Workload clusters outlive manager restarts on purpose: delete them while the manager can still clean up.
    KUBECONFIG="$kubeconfig" kubectl delete clusters.slipway.dev --all -A --wait=true --timeout=120s || true
    kill "$(cat "$state/manager.pid")" 2>/dev/null || true
    while running "$state/manager.pid"; do sleep 0.2; done
    echo "stopped the manager"
  fi
  # Whatever is left of the workload clusters (the manager was gone, or could not delete them in time) is stopped
  # here: nothing the quickstart started keeps running.
  local pids
  pids="$(local_cluster_processes)"
  if [[ -n "$pids" ]]; then
    # shellcheck disable=SC2086 # one pid per word
    kill $pids 2>/dev/null || true
    for _ in $(seq 1 50); do
      [[ -z "$(local_cluster_processes)" ]] && break
      sleep 0.2
    done
    pids="$(local_cluster_processes)"
    # shellcheck disable=SC2086
    [[ -z "$pids" ]] || kill -9 $pids 2>/dev/null || true
    echo "stopped the workload clusters' local processes (their data stays in $clusters)"
  fi
  if running "$state/mirror.pid"; then
    kill "$(cat "$state/mirror.pid")" 2>/dev/null || true
    echo "stopped the add-on mirror"
  fi
  if running "$state/management.pid"; then
    kill "$(cat "$state/management.pid")" 2>/dev/null || true
    while running "$state/management.pid"; do sleep 0.2; done
    echo "stopped the local management cluster (its data stays in $management)"
  fi
  rm -f "$state/manager.pid" "$state/management.pid" "$state/mirror.pid"
}

usage="usage: hack/quickstart.sh [--ha] [--addons | --addons-mirror DIR | stop]"
addons=0
mirror=""
sample=config/samples/local-cluster.yaml
cluster=local-demo
while (($#)); do
  case "$1" in
    stop) stop; exit 0 ;;
    --ha) sample=config/samples/local-ha-cluster.yaml; cluster=local-ha ;;
    --addons) addons=1 ;;
    --addons-mirror)
      addons=1
      mirror="${2:-}"
      [[ -d "$mirror" ]] || { echo "error: --addons-mirror needs a directory with the manifests; $usage" >&2; exit 2; }
      mirror="$(cd "$mirror" && pwd)"
      shift
      ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done

for tool in cargo go; do
  command -v "$tool" >/dev/null || { echo "error: $tool is needed; see README.md, Prerequisites" >&2; exit 1; }
done
hack/build-k8s.sh
hack/haproxy.sh --ensure >/dev/null
echo "building slipway (debug) ..."
cargo build --quiet -p slipway -p slipway-testenv
mkdir -p "$state"

if running "$state/management.pid"; then
  echo "the local management cluster is already running (pid $(cat "$state/management.pid"))"
else
  rm -f "$kubeconfig"
  nohup "$CARGO_TARGET_DIR/debug/slipway-testenv" --dir "$management" >"$state/management.log" 2>&1 &
  echo $! >"$state/management.pid"
  echo -n "starting the local management cluster "
  for _ in $(seq 1 120); do
    grep -q "control plane ready" "$state/management.log" 2>/dev/null && break
    if ! running "$state/management.pid"; then
      echo; echo "error: the management cluster exited; its log:" >&2; tail -n 30 "$state/management.log" >&2; exit 1
    fi
    echo -n "."; sleep 0.5
  done
  echo
fi
export KUBECONFIG="$kubeconfig"

"$slipway" init --without-manager
if [[ -n "$mirror" ]]; then
  # Each bundle's file, found by name under the mirror, served as-is: the sha256 pins still decide.
  served="$state/mirror"
  rm -rf "$served" && mkdir -p "$served"
  for url in $(grep -ho 'url: http[^ ]*' config/addons/*.yaml | cut -d' ' -f2); do
    name="${url##*/}"
    found="$(find "$mirror" -name "$name" -type f | head -n 1)"
    [[ -n "$found" ]] || { echo "error: $mirror has no $name (needed by $url)" >&2; exit 1; }
    ln -sf "$found" "$served/$name"
  done
  if ! running "$state/mirror.pid"; then
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    nohup python3 -m http.server --bind 127.0.0.1 --directory "$served" "$port" >"$state/mirror.log" 2>&1 &
    echo $! >"$state/mirror.pid"
    echo "$port" >"$state/mirror.port"
    echo "serving the add-on manifests from $mirror on 127.0.0.1:$port"
  fi
  port="$(cat "$state/mirror.port")"
  for bundle in config/addons/*.yaml; do
    sed -E "s#url: https?://[^ ]*/([^/ ]+)\$#url: http://127.0.0.1:$port/\1#" "$bundle" |
      kubectl apply --server-side --field-manager=slipway -f -
  done
elif ((addons)); then
  for bundle in config/addons/*.yaml; do kubectl apply --server-side --field-manager=slipway -f "$bundle"; done
fi

if running "$state/manager.pid"; then
  echo "the manager is already running (pid $(cat "$state/manager.pid"))"
else
  # The mirror serves on loopback, which the manager refuses to fetch from unless allowed.
  egress=()
  [[ -z "$mirror" ]] || egress=(--allow-egress 127.0.0.0/8)
  nohup "$slipway" manager --enable-provider local,sim --leader-elect=false --metrics-addr 127.0.0.1:0 --local-state-dir "$clusters" \
    "${egress[@]}" >"$state/manager.log" 2>&1 &
  echo $! >"$state/manager.pid"
  echo "started the manager (log: $state/manager.log)"
fi

kubectl apply --server-side --field-manager=slipway-quickstart -f "$sample"
if ! "$slipway" wait cluster "$cluster" --for ready --timeout 5m; then
  # `wait` named the condition that holds the cluster; say what else is known.
  {
    echo
    echo "The cluster $cluster did not become Ready. What holds it:"
    "$slipway" describe cluster "$cluster" || true
    kubectl get addonbundles.slipway.dev -A 2>/dev/null || true
    if ! running "$state/manager.pid"; then
      echo "The manager is not running; the end of its log ($state/manager.log):"
      tail -n 20 "$state/manager.log" || true
    fi
    echo "Objects left from an earlier run stay in the management cluster ($management): \`kubectl get"
    echo "clusters.slipway.dev,addonbundles.slipway.dev -A\` lists them; \`hack/quickstart.sh stop\` and removing $state"
    echo "starts from nothing."
  } >&2
  exit 1
fi

echo
kubectl get clusters.slipway.dev,machinepools.slipway.dev
"$slipway" get kubeconfig "$cluster" --output "$state/$cluster.kubeconfig" >/dev/null
cat <<MSG

The workload cluster $cluster is Ready: its control plane runs as local processes under $clusters (HAProxy in front
of its members), its nodes are kwok nodes.
  kubectl --kubeconfig $state/$cluster.kubeconfig get nodes
  KUBECONFIG=$kubeconfig $slipway describe cluster $cluster
  KUBECONFIG=$kubeconfig $slipway fleet

The management cluster: export KUBECONFIG=$kubeconfig
Logs: $state/manager.log, $management/logs/, $clusters/default/$cluster/logs/ and members/*/logs/
Stop everything: hack/quickstart.sh stop
MSG
