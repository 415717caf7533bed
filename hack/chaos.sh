#!/usr/bin/env bash
# The kill campaign: a real etcd + kube-apiserver (slipway-testenv), sushy-tools' Redfish emulator, and one
# `slipway manager` process that is SIGKILLed N times at random moments while sim, local and bare-metal clusters
# are created, scaled and deleted, and started again after each kill. After every kill it checks that no machine
# was created twice (the sim provider's creation counts, bare-metal host claims, local process sets); after every
# round that the fleet converges and nothing of a deleted cluster is left (sim state, local processes and
# directories, claimed hosts, Secrets). Prints a line per kill and per round, then a summary; exits non-zero on
# any violation.
#   hack/chaos.sh N [--seed S]     (N kills; S replays the campaign's choices of actions and delays)
# The driver is crates/cli/tests/chaos (its short run, ten kills, is part of `cargo test`). Manager logs and the
# providers' state go to a temporary directory, kept when the campaign fails (SLIPWAY_CHAOS_DIR to choose it).
set -euo pipefail

usage="usage: hack/chaos.sh N [--seed S]   (N: how many kills, e.g. 100)"
kills="${1:-}"
if [[ ! "$kills" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi
shift
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seed)
      export SLIPWAY_CHAOS_SEED="${2:?--seed needs a number}"
      shift 2
      ;;
    *)
      echo "$usage" >&2
      exit 2
      ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

fail() { echo "error: $*" >&2; exit 1; }

hack/build-k8s.sh >&2 || fail "hack/build-k8s.sh could not build the control-plane binaries"
hack/sushy.sh --ensure >/dev/null || fail "hack/sushy.sh --ensure could not install sushy-tools"

echo "building slipway and the campaign driver ..." >&2
cargo build --quiet --locked -p slipway --bin slipway || fail "cargo build failed"
driver="$(cargo test --locked -p slipway --test chaos --no-run --message-format=json-render-diagnostics |
  grep '"kind":\["test"\]' | grep '"name":"chaos"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[[ -x "$driver" ]] || fail "cargo test --no-run did not name the chaos test binary"

chosen_dir="${SLIPWAY_CHAOS_DIR:-}"
dir="${chosen_dir:-$(mktemp -d -t slipway-chaos.XXXXXX)}"
mkdir -p "$dir"
# The campaign runs its own copy of the manager: a build into the same target directory (another checkout, say)
# must not swap the binary between two kills.
cp "$CARGO_TARGET_DIR/debug/slipway" "$dir/slipway"
cleanup() {
  local status=$?
  rm -f "$dir/slipway"
  if ((status == 0)) && [[ -z "$chosen_dir" ]]; then
    rm -rf "$dir"
  else
    echo "manager logs, provider state and summary.txt: $dir" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(date -u +%Y-%m-%dT%H:%M:%SZ), $kills kills" >&2
cd crates/cli
SLIPWAY_CHAOS_KILLS="$kills" SLIPWAY_CHAOS_DIR="$dir" SLIPWAY_CHAOS_MANAGER_BIN="$dir/slipway" \
  "$driver" kill_campaign --exact --ignored --nocapture --test-threads=1
