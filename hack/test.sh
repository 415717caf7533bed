#!/usr/bin/env bash
# Runs every check Slipway has, the same way on a laptop and in CI: builds the real control-plane binaries when
# missing, then cargo fmt, clippy and the whole workspace's tests against them, then builds the manager's image and
# runs it as its Deployment would (hack/test-image.sh), then the quickstart (hack/test-quickstart.sh). Ends with the test summary.
#
# Build caches live outside the clone so a second run is fast: CARGO_TARGET_DIR defaults to
# ${SLIPWAY_CACHE:-~/.cache/slipway}/target, the Kubernetes binaries to ${SLIPWAY_CACHE:-~/.cache/slipway}/k8s.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=hack/versions.env
source hack/versions.env
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# Two cores: keep the linker's memory in check while test binaries build side by side.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# CI builds each clone once: incremental compilation data would only fill the disk (25 GB after a day of runs).
if [[ "${CI:-}" == "true" ]]; then
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "control-plane binaries (hack/build-k8s.sh)"
hack/build-k8s.sh

step "HAProxy for local clusters' endpoints (hack/haproxy.sh)"
hack/haproxy.sh --ensure

step "cloud-init and shellcheck, which check every rendered user data, and xorriso, which reads bare-metal config drives back (Debian packages)"
# shellcheck source=hack/packages.sh
source hack/packages.sh
ensure_package cloud-init cloud-init
ensure_package shellcheck shellcheck
ensure_package xorriso xorriso

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo deny check licenses bans sources (deny.toml)"
# Built once into the cache; advisories are not checked here (deny.toml says why).
deny="$cache/tools/bin/cargo-deny"
if [[ "$("$deny" --version 2>/dev/null)" != "cargo-deny $CARGO_DENY_VERSION" ]]; then
  CARGO_TARGET_DIR="$cache/tools/target" cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" \
    --root "$cache/tools"
  rm -rf "$cache/tools/target"
fi
"$deny" check licenses bans sources

step "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

step "the manager's image, run as its Deployment would (hack/test-image.sh)"
# The one test cargo test skipped above (it needs the image) runs here; its result joins the summary.
set +e
hack/test-image.sh 2>&1 | tee -a "$log"
image_status=${PIPESTATUS[0]}
set -e
if [[ "$status" == 0 ]]; then status=$image_status; fi

step "the quickstart, --ha, and its stop without a manager (hack/test-quickstart.sh)"
set +e
hack/test-quickstart.sh 2>&1 | tee -a "$log"
quickstart_status=${PIPESTATUS[0]}
set -e
if [[ "$status" == 0 ]]; then status=$quickstart_status; fi

# One line for the whole run: cargo prints a summary per test binary.
read -r passed failed ignored < <(awk '/^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed;/) p += $i
      if ($(i+1) ~ /^failed;/) f += $i
      if ($(i+1) ~ /^ignored;/) g += $i
    }
  } END { print p+0, f+0, g+0 }' "$log")
echo
echo "hack/test.sh finished in $(( $(date +%s) - started ))s (exit code $status)"
echo "$passed passed, $failed failed, $ignored skipped"
exit "$status"
