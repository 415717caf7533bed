#!/usr/bin/env bash
# Slipway against Cluster API on the same work (a benchmark, not a test): N clusters of 1 control-plane machine and
# one pool / MachineDeployment of 3 workers, infrastructure at zero delay on both sides, each side on its own fresh
# etcd + kube-apiserver (slipway-testenv). Prints one markdown table with Slipway/CAPI ratios.
#   hack/bench-vs-capi.sh N [bench-vs-capi flags, e.g. --steady-seconds 30]
#
# Cluster API is built from the Go module proxy (never copied into the repo): its four managers (core, kubeadm
# bootstrap, kubeadm control plane, and CAPD, whose in-memory backend fakes machines and workload API servers) in a
# wrapper module under ${SLIPWAY_CACHE:-~/.cache/slipway}/capi/<version>/, reused once built. Its CRDs, webhook
# configurations and ClusterClass are read from the Go module cache at run time. The managers run with their shipped
# defaults plus ClusterTopology=true; their webhooks are served on local ports with a CA generated per run.
# Any component that fails to build or start fails the script (non-zero, with the reason); a table is printed only
# when both sides ran (exit code 3 when one did not bring all clusters up before the timeout: the table then says how
# far it got). The managers' logs and both sides' measurements (JSON) stay in the work directory it names.
# Results and how to read them: docs/benchmarks.md.
set -euo pipefail

usage="usage: hack/bench-vs-capi.sh N [bench-vs-capi flags]   (N: how many clusters per side, e.g. 10, 100, 1000)"
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
# shellcheck source=hack/versions.env
source hack/versions.env

fail() { echo "error: $*" >&2; exit 1; }

# --- Cluster API's managers, from the Go module proxy ---------------------------------------------------------------
capi_out="$cache/capi/$CAPI_VERSION"
capi_src="$capi_out/src"
capi_bin="$capi_out/bin"
# binary name -> Go main package
capi_binaries=(capi-core capi-kubeadm-bootstrap capi-kubeadm-control-plane capd)
capi_packages=(
  sigs.k8s.io/cluster-api/core
  sigs.k8s.io/cluster-api/bootstrap/kubeadm
  sigs.k8s.io/cluster-api/controlplane/kubeadm
  sigs.k8s.io/cluster-api/test/infrastructure/docker
)

# `go install pkg@version` refuses Cluster API: its go.mod files replace sigs.k8s.io/cluster-api/api (and, in test/,
# sigs.k8s.io/cluster-api) with local paths and require them at v0.0.0-00010101000000-000000000000. A wrapper module
# requires all three modules and replaces both with the release, so those placeholder versions resolve to it.
build_capi() {
  local i missing=() start
  for i in "${!capi_binaries[@]}"; do
    local b="${capi_binaries[$i]}"
    [[ -x "$capi_bin/$b" && "$(cat "$capi_bin/.$b.version" 2>/dev/null)" == "$CAPI_VERSION" ]] || missing+=("$i")
  done
  if ((${#missing[@]} == 0)); then
    echo "cluster-api $CAPI_VERSION: up to date (${capi_binaries[*]})" >&2
    return
  fi
  command -v go >/dev/null 2>&1 || fail "Go is not installed or not on PATH; it builds Cluster API's managers"
  mkdir -p "$capi_src" "$capi_bin"
  echo "cluster-api $CAPI_VERSION: preparing wrapper module in $capi_src" >&2
  {
    echo "module slipway.local/build/cluster-api"
    echo
    echo "go 1.26"
    echo
    echo "require ("
    echo "	sigs.k8s.io/cluster-api $CAPI_VERSION"
    echo "	sigs.k8s.io/cluster-api/api $CAPI_VERSION"
    echo "	sigs.k8s.io/cluster-api/test $CAPI_VERSION"
    echo ")"
    echo
    echo "replace ("
    echo "	sigs.k8s.io/cluster-api => sigs.k8s.io/cluster-api $CAPI_VERSION"
    echo "	sigs.k8s.io/cluster-api/api => sigs.k8s.io/cluster-api/api $CAPI_VERSION"
    echo ")"
    echo
    for p in "${capi_packages[@]}"; do echo "tool $p"; done
  } >"$capi_src/go.mod"
  (cd "$capi_src" && nice -n 19 go mod tidy >&2) || fail "go mod tidy of the Cluster API wrapper module failed ($capi_src)"
  for i in "${missing[@]}"; do
    local b="${capi_binaries[$i]}" p="${capi_packages[$i]}"
    echo "cluster-api $CAPI_VERSION: building $b ($p) ..." >&2
    start=$(date +%s)
    (cd "$capi_src" && CGO_ENABLED=0 nice -n 19 go build -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/cluster-api/version.gitVersion=$CAPI_VERSION" -o "$capi_bin/$b" "$p" >&2) ||
      fail "go build of $p (Cluster API $CAPI_VERSION) failed"
    echo "$CAPI_VERSION" >"$capi_bin/.$b.version"
    echo "cluster-api $CAPI_VERSION: built $b in $(( $(date +%s) - start ))s" >&2
  done
}

if [[ "${BENCH_VS_CAPI_BUILD_ONLY:-}" == 1 ]]; then build_capi; exit 0; fi

hack/build-k8s.sh >&2 || fail "hack/build-k8s.sh could not build etcd and kube-apiserver"
apiserver_bin="$cache/k8s/$KUBERNETES_VERSION/bin/kube-apiserver"
build_capi
echo "building slipway, slipway-testenv and bench-vs-capi (release) ..." >&2
cargo build --quiet --release -p slipway -p slipway-testenv -p slipway-e2e || fail "cargo build --release failed"
for tool in kubectl openssl curl; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH; the script needs it to set up the apiservers"
done
capi_module="$(cd "$capi_src" && go list -m -f '{{.Dir}}' sigs.k8s.io/cluster-api)" ||
  fail "cannot find sigs.k8s.io/cluster-api $CAPI_VERSION in the Go module cache"
capi_test_module="$(cd "$capi_src" && go list -m -f '{{.Dir}}' sigs.k8s.io/cluster-api/test)" ||
  fail "cannot find sigs.k8s.io/cluster-api/test $CAPI_VERSION in the Go module cache"
[[ -d "$capi_module/core/config/crd/bases" && -d "$capi_test_module/infrastructure/docker/config/crd/bases" ]] ||
  fail "the Cluster API modules in the Go module cache have no config/crd/bases ($capi_module, $capi_test_module)"

# The in-memory backend binds these on all interfaces, whatever the flags: :19000 (debug) and one port per workload
# cluster from 20000 up. The managers' own ports are chosen here, on 127.0.0.1.
capi_names=(core cabpk kcp capd)
capi_webhook_ports=(9443 9444 9445 9446)
capi_health_ports=(9450 9451 9452 9453)
capi_metrics_ports=(9460 9461 9462 9463)
port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
for port in "${capi_webhook_ports[@]}" "${capi_health_ports[@]}" "${capi_metrics_ports[@]}" 19000; do
  ! port_in_use "$port" || fail "port $port is in use; Cluster API's managers need it (see hack/bench-vs-capi.sh)"
done

work="$(mktemp -d -t slipway-vs-capi.XXXXXX)"
pids=() # every process this script started, stopped in reverse order
stop() { # SIGTERM, then wait for the process to exit so its ports and files are free
  local pid="$1"
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
stop_all() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop "${pids[$i]}"; done
  pids=()
}
cleanup() {
  local status=$?
  stop_all
  if ((status == 0)); then
    # Keep the managers' logs and the measurements (small); drop the etcd data (large).
    rm -rf "$work"/*/apiserver/etcd
    echo "logs and measurements (capi.json, slipway.json) are in $work" >&2
  else
    echo "the benchmark failed (exit code $status); logs kept in $work" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until `$2` appears in log `$1`, while process `$3` runs; `$4` names what is starting.
wait_for_log() {
  local log="$1" pattern="$2" pid="$3" what="$4"
  for _ in $(seq 1 480); do
    if grep -q "$pattern" "$log" 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$log" >&2; fail "$what exited while starting (log: $log)"; }
    sleep 0.25
  done
  tail -n 30 "$log" >&2
  fail "$what did not start within 120 s (log: $log)"
}

# Starts a fresh etcd + kube-apiserver in directory $1; sets kubeconfig and control_plane (NAME=PID flags).
start_apiserver() {
  local dir="$1" testenv_pid child
  mkdir -p "$dir"
  "$release/slipway-testenv" --dir "$dir/apiserver" >"$dir/testenv.log" 2>&1 &
  testenv_pid=$!
  pids+=("$testenv_pid")
  wait_for_log "$dir/testenv.log" "control plane ready" "$testenv_pid" "slipway-testenv (etcd + kube-apiserver)"
  kubeconfig="$dir/apiserver/kubeconfig"
  [[ -s "$kubeconfig" ]] || fail "slipway-testenv is ready but wrote no kubeconfig at $kubeconfig"
  control_plane=()
  for child in $(pgrep -P "$testenv_pid"); do
    case "$(cat "/proc/$child/comm" 2>/dev/null)" in
      etcd) control_plane+=(--control-plane "etcd=$child") ;;
      kube-apiserver) control_plane+=(--control-plane "kube-apiserver=$child") ;;
    esac
  done
  ((${#control_plane[@]} == 4)) || fail "could not find the etcd and kube-apiserver processes of slipway-testenv"
}

k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

# --- Cluster API ----------------------------------------------------------------------------------------------------
run_capi() {
  local dir="$work/capi" certs="$work/capi/certs" ca_b64 crd port i
  echo "cluster-api: starting etcd + kube-apiserver in $dir ..." >&2
  start_apiserver "$dir"

  # One CA and one serving certificate for all four webhook servers (in place of cert-manager, which needs a pod).
  mkdir -p "$certs"
  (
    cd "$certs"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench-vs-capi-webhook-ca" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout tls.key -out tls.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >ext.cnf
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile ext.cnf -out tls.crt
  ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; fail "openssl could not make the webhook certificates"; }
  ca_b64="$(base64 -w0 "$certs/ca.crt")"

  echo "cluster-api: installing CRDs and webhook configurations from $capi_module and $capi_test_module ..." >&2
  local crd_dirs=("$capi_module/core" "$capi_module/bootstrap/kubeadm" "$capi_module/controlplane/kubeadm"
    "$capi_test_module/infrastructure/docker")
  for i in "${!crd_dirs[@]}"; do
    k apply --server-side -f "${crd_dirs[$i]}/config/crd/bases/" >/dev/null ||
      fail "could not apply the CRDs in ${crd_dirs[$i]}/config/crd/bases"
  done
  k wait --for condition=established crd --all --timeout=120s >/dev/null || fail "the CRDs did not become Established"
  # What each provider's config/crd/kustomization.yaml would add: the contract labels (not on core's CRDs) and the
  # conversion webhook (config/crd/patches/webhook_in_*.yaml plus cert-manager's CA injection).
  for crd in $(k get crd -o name | sed 's#.*/##' | grep 'cluster\.x-k8s\.io$'); do
    case "$crd" in
      *.bootstrap.cluster.x-k8s.io) port=9444 ;;
      *.controlplane.cluster.x-k8s.io) port=9445 ;;
      *.infrastructure.cluster.x-k8s.io) port=9446 ;;
      *) port=9443 ;;
    esac
    k patch crd "$crd" --type=merge -p "{\"spec\":{\"conversion\":{\"strategy\":\"Webhook\",\"webhook\":{\"conversionReviewVersions\":[\"v1\"],\"clientConfig\":{\"url\":\"https://127.0.0.1:${port}/convert\",\"caBundle\":\"${ca_b64}\"}}}}}" >/dev/null ||
      fail "could not set the conversion webhook of CRD $crd"
    if [[ "$port" != 9443 ]]; then
      k label crd "$crd" cluster.x-k8s.io/v1beta1=v1beta1 cluster.x-k8s.io/v1beta2=v1beta2 --overwrite >/dev/null ||
        fail "could not label CRD $crd"
    fi
  done
  # Admission webhooks: the shipped manifests point at a Service; point them at the local port instead.
  local manifests=("$capi_module/core" "$capi_module/bootstrap/kubeadm" "$capi_module/controlplane/kubeadm"
    "$capi_test_module/infrastructure/docker")
  for i in "${!manifests[@]}"; do
    sed -E -e '/^    service:$/d' -e '/^      name: webhook-service$/d' -e '/^      namespace: system$/d' \
      -e "s#^      path: (/.*)\$#    caBundle: ${ca_b64}\n    url: https://127.0.0.1:${capi_webhook_ports[$i]}\1#" \
      -e "s#^  name: (mutating|validating)-webhook-configuration\$#  name: capi-${capi_names[$i]}-\1-webhook-configuration#" \
      "${manifests[$i]}/config/webhook/manifests.yaml"
    echo "---"
  done >"$dir/webhooks.yaml"
  if grep -q 'webhook-service' "$dir/webhooks.yaml"; then
    fail "rewriting the webhook manifests left a Service reference in $dir/webhooks.yaml (the manifest layout changed)"
  fi
  k apply --server-side -f "$dir/webhooks.yaml" >/dev/null || fail "could not apply $dir/webhooks.yaml"

  # The managers, started before any object exists. Shipped defaults (QPS 100/burst 200, concurrency, log level)
  # except: no leader election (Slipway's manager runs without it too), ClusterTopology on, local ports.
  local binaries=("$capi_bin/capi-core" "$capi_bin/capi-kubeadm-bootstrap" "$capi_bin/capi-kubeadm-control-plane"
    "$capi_bin/capd")
  local managers=() pid
  for i in "${!capi_names[@]}"; do
    local name="${capi_names[$i]}" gates=()
    [[ "$name" == cabpk ]] || gates=(--feature-gates=ClusterTopology=true)
    KUBECONFIG="$kubeconfig" POD_IP=127.0.0.1 POD_NAMESPACE=capi-system "${binaries[$i]}" \
      --leader-elect=false \
      --webhook-port="${capi_webhook_ports[$i]}" --webhook-cert-dir="$certs" \
      --health-addr="127.0.0.1:${capi_health_ports[$i]}" \
      --diagnostics-address="127.0.0.1:${capi_metrics_ports[$i]}" --insecure-diagnostics=true \
      "${gates[@]}" >"$dir/$name.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    managers+=(--manager "$name=$pid")
  done
  echo "cluster-api: waiting for the four managers' /readyz ..." >&2
  for i in "${!capi_names[@]}"; do
    local ok=""
    for _ in $(seq 1 240); do
      if curl -fs "http://127.0.0.1:${capi_health_ports[$i]}/readyz" >/dev/null 2>&1; then ok=1; break; fi
      kill -0 "${pids[$((${#pids[@]} - 4 + i))]}" 2>/dev/null || break
      sleep 0.5
    done
    if [[ -z "$ok" ]]; then
      tail -n 30 "$dir/${capi_names[$i]}.log" >&2
      fail "Cluster API manager ${capi_names[$i]} did not become ready within 120 s (log: $dir/${capi_names[$i]}.log)"
    fi
  done

  # CAPD's shipped in-memory ClusterClass with every startup duration and jitter set to zero.
  k create namespace bench >/dev/null || fail "could not create namespace bench"
  sed -E -e 's/startupDuration: "[0-9.]+s"/startupDuration: "0s"/' -e 's/startupJitter: "[0-9.]+"/startupJitter: "0"/' \
    "$capi_test_module/infrastructure/docker/templates/clusterclass-in-memory.yaml" >"$dir/clusterclass.yaml"
  if grep -E 'startup(Duration|Jitter): "[1-9]' "$dir/clusterclass.yaml"; then
    fail "a non-zero in-memory delay is left in $dir/clusterclass.yaml"
  fi
  k apply --server-side -n bench -f "$dir/clusterclass.yaml" >/dev/null || fail "could not apply the ClusterClass"
  k wait -n bench clusterclass.cluster.x-k8s.io/in-memory --for=condition=VariablesReady --timeout=120s >/dev/null ||
    fail "ClusterClass in-memory did not become VariablesReady"

  echo "cluster-api: measuring $clusters clusters ..." >&2
  "$release/bench-vs-capi" measure --side capi --clusters "$clusters" --kubeconfig "$kubeconfig" \
    "${managers[@]}" "${control_plane[@]}" --out "$work/capi.json" "$@" ||
    fail "measuring Cluster API failed (logs in $dir)"
  stop_all
}

# --- Slipway --------------------------------------------------------------------------------------------------------
run_slipway() {
  local dir="$work/slipway" pid metrics_addr
  echo "slipway: starting etcd + kube-apiserver in $dir ..." >&2
  start_apiserver "$dir"
  "$release/slipway" crds --stdout | k apply --server-side -f - >/dev/null || fail "could not apply Slipway's CRDs"
  k wait --for condition=established crd --all --timeout=60s >/dev/null || fail "Slipway's CRDs did not become Established"
  # As hack/bench-scale.sh runs it: release build, the sim provider enabled, every other flag at its default.
  KUBECONFIG="$kubeconfig" RUST_LOG="${RUST_LOG:-info}" "$release/slipway" manager \
    --enable-provider sim --leader-elect=false --metrics-addr 127.0.0.1:0 --log-format json >"$dir/manager.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_for_log "$dir/manager.log" "serving /metrics" "$pid" "slipway manager"
  echo "slipway: measuring $clusters clusters ..." >&2
  "$release/bench-vs-capi" measure --side slipway --clusters "$clusters" --kubeconfig "$kubeconfig" \
    --manager "slipway=$pid" "${control_plane[@]}" --out "$work/slipway.json" "$@" ||
    fail "measuring Slipway failed (logs in $dir)"
  stop_all
}

# Cluster API first: it is the side more likely to fail to start, and a table needs both.
run_capi "$@"
run_slipway "$@"

if revision="$(git rev-parse --short HEAD 2>/dev/null)"; then
  git diff --quiet HEAD 2>/dev/null || revision+=" with uncommitted changes"
else
  revision="unknown (not a git checkout)"
fi
cat <<HEADER
# hack/bench-vs-capi.sh $clusters $*

- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, $(uname -sr)
- versions: $("$apiserver_bin" --version), etcd $ETCD_VERSION, Cluster API $CAPI_VERSION (core, kubeadm bootstrap, kubeadm control plane, CAPD in-memory), slipway $revision

HEADER
status=0
"$release/bench-vs-capi" table --slipway "$work/slipway.json" --capi "$work/capi.json" || status=$?
if ((status == 3)); then
  echo "a side did not bring all clusters up within the timeout; the table says how far it got" >&2
  exit 3
fi
((status == 0)) || fail "could not print the table"
