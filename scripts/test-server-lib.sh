# Helpers shared by the throwaway database servers of the tests (scripts/mariadb-test-server.sh,
# scripts/postgres-test-server.sh). Sourced, not run; the caller sets `name` (for messages) and `set -euo pipefail`.

die() {
  echo "$name: $*" >&2
  exit 1
}

# install_packages PACKAGE...: install the Debian packages given (none: nothing to do); needs root.
install_packages() {
  [ "$#" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to install $*"
  echo "$name: installing $*" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "$@" >&2
}

# missing_packages PACKAGE...: print those not installed.
missing_packages() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# stop_pid PID: ask a server to stop, wait up to 30 s, then kill it.
stop_pid() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# remove_state DIR MARKER: delete a server's folder, but only one under /tmp or one this script made (MARKER).
remove_state() {
  case "$1" in
    /tmp/*) rm -rf "$1" ;;
    *) [ -f "$1/$2" ] && rm -rf "$1" ;;
  esac
}

random_password() {
  head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'
}
