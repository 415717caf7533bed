#!/usr/bin/env bash
# sushy-tools' Redfish emulator for the baremetal provider's tests (providers/baremetal/tests).
#
#   hack/sushy.sh --ensure               create the venv with the pinned sushy-tools if it is missing; print the
#                                        path of sushy-emulator
#   hack/sushy.sh --prepare DIR [OPTS]   ensure, then write an emulator config into DIR (fresh state directory,
#                                        htpasswd with a bcrypt entry, self-signed TLS certificate); print its path
#   hack/sushy.sh [OPTS]                 prepare a temporary DIR and run the emulator in the foreground
#
# OPTS: --port PORT (default 8000), --systems N (default 2), --no-tls (serve plain HTTP). The account is
# ${SUSHY_USERNAME:-admin} with password ${SUSHY_PASSWORD:-password}; the password is read from the environment
# so that it never shows in a process list.
#
# The emulator uses the fake driver: no libvirt, no VMs. Systems are named host-0 … host-N-1 with UUIDs
# 00000000-0000-4000-8000-00000000000N (N in hex) and boot MACs 52:54:00:00:00:NN; they start powered off.
# Power changes land 1–11 s after they are asked for (sushy's fake driver), so callers poll.
#
# The venv lives in ${SLIPWAY_CACHE:-$HOME/.cache/slipway}/sushy-venv, outside the clone and apart from moto's
# (their Flask pins need not agree), and is reused when it already holds the pinned version.
set -euo pipefail

# Pinned: 2.2.0, the version the tests were checked against. It brings bcrypt, which
# its htpasswd check uses and which this script uses to hash the password.
SUSHY_VERSION=2.2.0

cache="${SLIPWAY_CACHE:-$HOME/.cache/slipway}"
venv="$cache/sushy-venv"
emulator="$venv/bin/sushy-emulator"

is_installed() {
  [[ -x "$emulator" ]] &&
    [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("sushy-tools"))' 2>/dev/null)" == "$SUSHY_VERSION" ]]
}

ensure() {
  if is_installed; then
    return
  fi
  # Tests start emulators in parallel: one installs, the others wait for it and then find it installed.
  mkdir -p "$cache"
  exec 9>"$cache/sushy-venv.lock"
  flock 9
  if is_installed; then
    return
  fi
  local python
  python="$(command -v python3 || true)"
  if [[ -z "$python" ]]; then
    echo "error: python3 is not on PATH; hack/sushy.sh needs Python >= 3.9 with the venv module to install sushy-tools." >&2
    exit 1
  fi
  echo "sushy-tools $SUSHY_VERSION: creating $venv" >&2
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "sushy-tools==$SUSHY_VERSION" >&2
  is_installed || {
    echo "error: installing sushy-tools==$SUSHY_VERSION into $venv did not leave $emulator behind" >&2
    exit 1
  }
}

# prepare DIR PORT SYSTEMS TLS: writes DIR/sushy.conf and what it names; prints the config's path.
prepare() {
  local dir="$1" port="$2" systems="$3" tls="$4"
  local username="${SUSHY_USERNAME:-admin}"
  mkdir -p "$dir"
  rm -rf "$dir/state"
  mkdir -p "$dir/state"

  # bcrypt is the only digest sushy accepts. 4 rounds (the minimum) because sushy checks the password on every
  # request: the default 12 rounds cost ~250 ms each. The password goes through stdin, not argv.
  local hash
  hash="$(printf '%s' "${SUSHY_PASSWORD:-password}" |
    "$venv/bin/python" -c 'import sys, bcrypt; print(bcrypt.hashpw(sys.stdin.buffer.read(), bcrypt.gensalt(rounds=4)).decode())')"
  printf '%s:%s\n' "$username" "$hash" >"$dir/htpasswd"

  if [[ "$tls" == yes ]]; then
    if ! command -v openssl >/dev/null; then
      echo "error: openssl is not on PATH; install it or use --no-tls" >&2
      exit 1
    fi
    openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=127.0.0.1" \
      -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" -addext "basicConstraints=critical,CA:FALSE" \
      -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
  fi

  {
    echo "# Written by hack/sushy.sh; read by sushy-emulator --config."
    echo "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'"
    echo "SUSHY_EMULATOR_LISTEN_PORT = $port"
    echo "SUSHY_EMULATOR_FAKE_DRIVER = True"
    echo "SUSHY_EMULATOR_STATE_DIR = '$dir/state'"
    echo "SUSHY_EMULATOR_AUTH_FILE = '$dir/htpasswd'"
    if [[ "$tls" == yes ]]; then
      echo "SUSHY_EMULATOR_SSL_CERT = '$dir/tls.crt'"
      echo "SUSHY_EMULATOR_SSL_KEY = '$dir/tls.key'"
    fi
    echo "SUSHY_EMULATOR_FAKE_SYSTEMS = ["
    local i
    for ((i = 0; i < systems; i++)); do
      printf "    {'uuid': '00000000-0000-4000-8000-%012x', 'name': 'host-%d', 'power_state': 'Off',\n" "$i" "$i"
      printf "     'nics': [{'mac': '52:54:00:00:00:%02x', 'ip': '192.0.2.%d'}]},\n" "$i" "$((i + 10))"
    done
    echo "]"
  } >"$dir/sushy.conf"
  echo "$dir/sushy.conf"
}

mode=run
dir=""
port=8000
systems=2
tls=yes
while [[ $# -gt 0 ]]; do
  case "$1" in
    --ensure)
      mode=ensure
      shift
      ;;
    --prepare)
      mode=prepare
      dir="${2:?--prepare needs a directory}"
      shift 2
      ;;
    --port)
      port="${2:?--port needs a number}"
      shift 2
      ;;
    --systems)
      systems="${2:?--systems needs a number}"
      shift 2
      ;;
    --no-tls)
      tls=no
      shift
      ;;
    *)
      echo "usage: hack/sushy.sh [--ensure | --prepare DIR] [--port PORT] [--systems N] [--no-tls]" >&2
      exit 2
      ;;
  esac
done

ensure
case "$mode" in
  ensure)
    echo "$emulator"
    ;;
  prepare)
    prepare "$(realpath -m "$dir")" "$port" "$systems" "$tls"
    ;;
  run)
    dir="$(mktemp -d -t slipway-sushy.XXXXXX)"
    config="$(prepare "$dir" "$port" "$systems" "$tls")"
    scheme=https
    [[ "$tls" == yes ]] || scheme=http
    echo "sushy-emulator on $scheme://127.0.0.1:$port/redfish/v1/ (user ${SUSHY_USERNAME:-admin}), $systems systems" >&2
    # The emulator downloads virtual media itself: loopback image servers must not go through a proxy.
    NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" "$emulator" --config "$config" &
    pid=$!
    # Stopping this script stops the emulator and removes its state.
    trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
    trap 'exit 130' INT TERM
    wait "$pid"
    ;;
esac
