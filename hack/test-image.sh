#!/usr/bin/env bash
# The manager's image, built from this checkout and run the way its Deployment runs it:
#
#   hack/test-image.sh
#
# builds the image with hack/image.sh (release build), installs skopeo and umoci when missing (Debian packages), and
# runs crates/cli/tests/manager_image.rs against the OCI archive. hack/test.sh calls it after cargo test.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
# shellcheck source=hack/packages.sh
source "$root/hack/packages.sh"
ensure_package skopeo skopeo
ensure_package umoci umoci
ensure_package unshare util-linux

started=$(date +%s)
archive="$(hack/image.sh | tail -n 1)"
echo "hack/image.sh took $(( $(date +%s) - started ))s: $archive"
SLIPWAY_IMAGE_ARCHIVE="$archive" cargo test --locked -p slipway --test manager_image -- --ignored
