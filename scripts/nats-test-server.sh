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
name=nats-test-server
# shellcheck source=scripts/test-server-lib.sh
. "$(dirname "$0")/test-server-lib.sh"

stop_server() {
  if [ -f "$dir/nats.pid" ]; then
    stop_pid "$(cat "$dir/nats.pid")"
  fi
  remove_state "$dir" nats.pid
}

case "$cmd" in
  start)
    # shellcheck disable=SC2046
    install_packages $(missing_packages nats-server libnats-dev)
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
