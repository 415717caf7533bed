#!/usr/bin/env bash
# The quickstart as a new user runs it, and its cleanup when the manager is gone:
#
#   hack/test-quickstart.sh
#
# runs `hack/quickstart.sh --ha` in a temporary directory (SLIPWAY_QUICKSTART_DIR) until the three-member sample
# cluster is Ready, SIGKILLs the manager (an interrupted quickstart), runs `hack/quickstart.sh stop` and checks that
# no process it or the local provider started is left. Prints a cargo-style result line for hack/test.sh's summary.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
dir="$(mktemp -d)"
export SLIPWAY_QUICKSTART_DIR="$dir/quickstart"
started=$(date +%s)

# Every process whose command line names a file under the temporary directory: what must be gone at the end.
leftovers() { pgrep -a -f -- "$dir/" | grep -v -e pgrep -e "$0" || true; }
fail() {
  echo "quickstart test failed: $*" >&2
  hack/quickstart.sh stop >/dev/null 2>&1 || true
  pkill -9 -f -- "$dir/" 2>/dev/null || true
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out (hack/test-quickstart.sh)"
  exit 1
}

hack/quickstart.sh --ha >"$dir/quickstart.out" 2>&1 || { tail -n 40 "$dir/quickstart.out" >&2; fail "hack/quickstart.sh --ha did not finish"; }
grep -q "The workload cluster local-ha is Ready" "$dir/quickstart.out" || fail "no Ready message"
members="$(find "$SLIPWAY_QUICKSTART_DIR/clusters" -name member.json | wc -l)"
[[ "$members" == 3 ]] || fail "$members control-plane members, not 3"
[[ -n "$(leftovers)" ]] || fail "no local processes found while the cluster runs (the check below would prove nothing)"

manager="$(cat "$SLIPWAY_QUICKSTART_DIR/manager.pid")"
kill -9 "$manager"
# Gone (or a zombie no one reaps): either way no longer a manager.
while [[ "$(awk '{ print $3 }' "/proc/$manager/stat" 2>/dev/null || echo gone)" != @(Z|gone) ]]; do sleep 0.1; done
hack/quickstart.sh stop >"$dir/stop.out" 2>&1 || { cat "$dir/stop.out" >&2; fail "hack/quickstart.sh stop failed"; }
cat "$dir/stop.out"
grep -q "stopped the workload clusters' local processes" "$dir/stop.out" || fail "stop did not stop the local processes"
left="$(leftovers)"
[[ -z "$left" ]] || fail "processes left after stop: $left"
rm -rf "$dir"
echo "hack/test-quickstart.sh: --ha Ready with 3 members, nothing left after stop without a manager, in $(( $(date +%s) - started ))s"
echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out (hack/test-quickstart.sh)"
