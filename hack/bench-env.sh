# shellcheck shell=bash
# What hack/bench-scale.sh and hack/bench-floor.sh share, sourced by both after they have read N into $clusters:
# the binaries (a release build, or prebuilt ones), a temporary work directory that is removed after a successful
# run and kept after a failed one, a fresh etcd + kube-apiserver (slipway-testenv) with Slipway's CRDs, and the
# report's header. Not meant to be run on its own.
#
# SLIPWAY_BENCH_BIN_DIR=DIR skips the build and takes slipway, slipway-testenv, bench-scale and bench-floor from DIR
# (e.g. a debug build, to check that the scripts work; a debug manager's figures are not the benchmark's).

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

fail() { echo "error: $*" >&2; exit 1; }

hack/build-k8s.sh >&2 || fail "hack/build-k8s.sh could not build the control-plane binaries"
# shellcheck source=hack/versions.env
source hack/versions.env
apiserver_bin="$cache/k8s/$KUBERNETES_VERSION/bin/kube-apiserver"
if [[ -n "${SLIPWAY_BENCH_BIN_DIR:-}" ]]; then
  bin="$SLIPWAY_BENCH_BIN_DIR"
  echo "using the prebuilt binaries in $bin (SLIPWAY_BENCH_BIN_DIR), not a release build" >&2
else
  bin="$CARGO_TARGET_DIR/release"
  echo "building slipway, slipway-testenv, bench-scale and bench-floor (release) ..." >&2
  cargo build --quiet --release -p slipway -p slipway-testenv -p slipway-e2e ||
    fail "cargo build --release failed"
fi
for binary in slipway slipway-testenv bench-scale bench-floor; do
  [[ -x "$bin/$binary" ]] || fail "$bin/$binary is missing or not executable"
done
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
    echo "the benchmark failed (exit code $status); logs kept in $work (*testenv.log, manager.log)" >&2
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

# Starts a fresh etcd + kube-apiserver in `$work/$1` (log `$work/$1-testenv.log`), installs Slipway's CRDs and
# waits until they are Established. Sets $testenv_pid and $kubeconfig.
start_apiserver() {
  local name="$1"
  echo "starting etcd + kube-apiserver in $work/$name ..." >&2
  "$bin/slipway-testenv" --dir "$work/$name" >"$work/$name-testenv.log" 2>&1 &
  testenv_pid=$!
  wait_for_log "$work/$name-testenv.log" "control plane ready" "$testenv_pid" "slipway-testenv"
  kubeconfig="$work/$name/kubeconfig"
  [[ -s "$kubeconfig" ]] || fail "slipway-testenv is ready but wrote no kubeconfig at $kubeconfig"
  echo "installing Slipway's CRDs ..." >&2
  "$bin/slipway" crds --stdout | kubectl --kubeconfig "$kubeconfig" apply --server-side -f - >/dev/null ||
    fail "could not apply the CRDs"
  kubectl --kubeconfig "$kubeconfig" wait --for condition=established crd --all --timeout=60s >/dev/null ||
    fail "the CRDs did not become Established"
}

# Stops the apiserver start_apiserver started (and its etcd), so the next one has the machine to itself.
stop_apiserver() {
  stop "$testenv_pid"
  testenv_pid=""
}

# The report's header: the command, the machine and the versions. `$1` is the command line to show.
print_header() {
  local revision
  if revision="$(git rev-parse --short HEAD 2>/dev/null)"; then
    git diff --quiet HEAD 2>/dev/null || revision+=" with uncommitted changes"
  else
    revision="unknown (not a git checkout)"
  fi
  local binaries="release build"
  [[ -n "${SLIPWAY_BENCH_BIN_DIR:-}" ]] && binaries="prebuilt binaries from $SLIPWAY_BENCH_BIN_DIR"
  cat <<HEADER
# $1

- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, $(uname -sr); load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)
- versions: $("$apiserver_bin" --version), etcd $ETCD_VERSION, slipway $revision ($binaries)

HEADER
}
