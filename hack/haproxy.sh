#!/usr/bin/env bash
# HAProxy, the load balancer the local provider runs in front of each cluster's control-plane members.
#
#   hack/haproxy.sh --ensure   install Debian's haproxy package if no haproxy is found; print the binary's path
#
# Found on PATH or in /usr/sbin (where Debian puts it, not on every user's PATH). Installing needs root (CI runs as
# root); otherwise the script says which command to run.
set -euo pipefail

find_haproxy() {
  command -v haproxy 2>/dev/null && return 0
  for candidate in /usr/sbin/haproxy /usr/local/sbin/haproxy; do
    [[ -x "$candidate" ]] && { echo "$candidate"; return 0; }
  done
  return 1
}

if [[ "${1:-}" != "--ensure" ]]; then
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi

if path="$(find_haproxy)"; then
  echo "$path"
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "error: HAProxy is not installed; run: sudo apt-get install haproxy" >&2
  exit 1
fi
echo "installing Debian's haproxy package" >&2
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy >&2; then
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy >&2
fi
find_haproxy
