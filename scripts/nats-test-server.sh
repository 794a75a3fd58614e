#!/usr/bin/env bash
# A throwaway NATS server for libsim's tests.
#
#   scripts/nats-test-server.sh start [DIR]   install nats-server if missing, start it bound to 127.0.0.1 on a free
#                                             port with its pid and log under DIR, print its URL (also in DIR/url)
#   scripts/nats-test-server.sh stop [DIR]    stop that server and delete DIR
#
# DIR defaults to $SIM_NATS_DIR or /tmp/sim-nats-test. Several servers may run at once in different DIRs. `start`
# exits non-zero when the server cannot start; nothing here touches a NATS service of the distribution.
set -euo pipefail

cmd=${1:-}
dir=${2:-${SIM_NATS_DIR:-/tmp/sim-nats-test}}

die() {
  echo "nats-test-server: $*" >&2
  exit 1
}

install_if_missing() {
  local missing=()
  command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
  dpkg-query -W -f='${Status}' libnats-dev 2>/dev/null | grep -q "install ok installed" || missing+=(libnats-dev)
  [ "${#missing[@]}" -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "need root to install ${missing[*]}"
  echo "nats-test-server: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

stop_server() {
  if [ -f "$dir/nats.pid" ]; then
    local pid
    pid=$(cat "$dir/nats.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

case "$cmd" in
  start)
    install_if_missing
    mkdir -p "$dir"
    port=$(free_port)
    nohup nats-server -a 127.0.0.1 -p "$port" -P "$dir/nats.pid" -l "$dir/nats.log" >/dev/null 2>&1 &
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "nats://127.0.0.1:$port" | tee "$dir/url"
        exit 0
      fi
      sleep 0.05
    done
    stop_server
    die "nats-server did not start on port $port"
    ;;
  stop)
    stop_server
    ;;
  *)
    die "usage: $0 start|stop [DIR]"
    ;;
esac
