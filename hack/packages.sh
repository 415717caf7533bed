# shellcheck shell=bash
# Sourced by hack/ scripts: ensure_package COMMAND PACKAGE installs Debian's PACKAGE when COMMAND is missing (as root,
# as CI runs), or says which command to run.
ensure_package() {
  command -v "$1" >/dev/null && return 0
  if [[ "$(id -u)" != 0 ]]; then
    echo "error: $1 is not installed; run: sudo apt-get install $2" >&2
    exit 1
  fi
  echo "installing Debian's $2 package" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2 ||
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" >&2; }
}
