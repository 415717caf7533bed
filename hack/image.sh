#!/usr/bin/env bash
# Builds the manager's container image from this checkout, offline (no base image is downloaded):
#
#   hack/image.sh [--binary PATH] [--image NAME:TAG] [--output FILE]
#
# 1. `cargo build --release -p slipway` (skipped with --binary, e.g. to package a debug build while trying things);
# 2. a root filesystem: the binary at /usr/local/bin/slipway, exactly the shared libraries `ldd` says it loads,
#    Debian's CA bundle at /etc/ssl/certs/ca-certificates.crt (HTTPS to clouds and add-on URLs), /etc/passwd and
#    /etc/group naming the non-root user 65532, and empty mount points;
# 3. `buildah build -f hack/Containerfile` on it: image ghcr.io/slipway/slipway:v<version from Cargo.toml> (what
#    `slipway init` deploys), OCI labels with the version and git commit, timestamps at 0, kept in the local
#    containers storage;
# 4. `buildah push` to an OCI archive, by default $CARGO_TARGET_DIR/image/slipway-v<version>.oci.tar, and prints
#    its path last.
#
# Needs buildah (Debian's package is installed when missing and the script runs as root).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"

version="$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[[ -n "$version" ]] || { echo "error: no version in Cargo.toml's [workspace.package]" >&2; exit 1; }
image="ghcr.io/slipway/slipway:v$version"
output="$CARGO_TARGET_DIR/image/slipway-v$version.oci.tar"
binary=""
usage="usage: hack/image.sh [--binary PATH] [--image NAME:TAG] [--output FILE]"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="${2:?$usage}"; shift 2 ;;
    --image) image="${2:?$usage}"; shift 2 ;;
    --output) output="${2:?$usage}"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1; $usage" >&2; exit 2 ;;
  esac
done

# shellcheck source=hack/packages.sh
source "$root/hack/packages.sh"
ensure_package buildah buildah
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || ensure_package update-ca-certificates ca-certificates

started=$(date +%s)
if [[ -z "$binary" ]]; then
  echo "==> cargo build --release -p slipway" >&2
  cargo build --release --locked -p slipway >&2
  binary="$CARGO_TARGET_DIR/release/slipway"
fi
[[ -x "$binary" ]] || { echo "error: $binary is not an executable" >&2; exit 1; }
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys" \
  "$rootfs/var/run/secrets/kubernetes.io/serviceaccount"
install -m 0755 "$binary" "$rootfs/usr/local/bin/slipway"
# Every library the dynamic loader maps, the loader included, at the path the binary asks for it.
libraries="$(ldd "$binary" | grep -o '/[^ ]*' || true)"
[[ -n "$libraries" ]] || { echo "error: ldd lists no libraries for $binary (a static binary needs no copying; this script expects a dynamic one)" >&2; exit 1; }
for library in $libraries; do
  mkdir -p "$rootfs$(dirname "$library")"
  cp -L "$library" "$rootfs$library"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/:/nonexistent\nslipway:x:65532:65532:slipway:/:/nonexistent\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nslipway:x:65532:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

echo "==> buildah build $image" >&2
buildah build --quiet --timestamp 0 --format oci -f "$root/hack/Containerfile" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" -t "$image" "$context" >&2
mkdir -p "$(dirname "$output")"
rm -f "$output"
buildah push --quiet "$image" "oci-archive:$output:$image" >&2
size=$(du -sb "$rootfs" | cut -f1)
echo "image $image: $(( size / 1024 / 1024 )) MiB uncompressed ($(wc -w <<<"$libraries") shared libraries), archive $(( $(stat -c %s "$output") / 1024 / 1024 )) MiB, built in $(( $(date +%s) - started ))s" >&2
echo "$output"
