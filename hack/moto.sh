#!/usr/bin/env bash
# moto's EC2 emulator for the aws provider's tests (providers/aws/tests).
#
#   hack/moto.sh --ensure        create the venv with the pinned moto if it is missing; print moto_server's path
#   hack/moto.sh [--port PORT]   ensure, then run moto_server on 127.0.0.1:PORT (default 5000) in the foreground
#
# The venv lives in ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/venv, outside the clone, and is reused when it already
# holds the pinned version, so a second run takes a moment. Tests start their own moto_server on a free port; this
# script only has to make the venv exist.
set -euo pipefail

# Pinned: 5.2.5, the version the tests were checked against.
MOTO_VERSION=5.2.5

cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
venv="$cache/venv"
server="$venv/bin/moto_server"

is_installed() {
  [[ -x "$server" ]] &&
    [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" == "$MOTO_VERSION" ]]
}

ensure() {
  if is_installed; then
    return
  fi
  local python
  python="$(command -v python3 || true)"
  if [[ -z "$python" ]]; then
    echo "error: python3 is not on PATH; hack/moto.sh needs Python >= 3.9 with the venv module to install moto." >&2
    exit 1
  fi
  echo "moto $MOTO_VERSION: creating $venv" >&2
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  is_installed || {
    echo "error: installing moto[server]==$MOTO_VERSION into $venv did not leave $server behind" >&2
    exit 1
  }
}

port=5000
case "${1:-}" in
  --ensure)
    ensure
    echo "$server"
    exit 0
    ;;
  --port)
    port="${2:?--port needs a number}"
    ;;
  "") ;;
  *)
    echo "usage: hack/moto.sh [--ensure | --port PORT]" >&2
    exit 2
    ;;
esac

ensure
# Unknown AMIs and instance types fail as they do on AWS, so a bad image or type shows as a permanent error.
export MOTO_ENABLE_AMI_VALIDATION="${MOTO_ENABLE_AMI_VALIDATION:-true}"
export MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION="${MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION:-true}"
exec "$server" -H 127.0.0.1 -p "$port"
