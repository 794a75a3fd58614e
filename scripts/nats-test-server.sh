#!/usr/bin/env bash
# A throwaway NATS server (or a cluster of them) for libsim's tests.
#
#   scripts/nats-test-server.sh start [DIR]   install nats-server if missing, start $SIM_NATS_SERVERS servers
#                                             (default 1; more form one NATS cluster) bound to 127.0.0.1 on free
#                                             ports with their pids, configuration and logs under DIR, print their
#                                             URLs, comma-separated (also in DIR/url)
#   scripts/nats-test-server.sh restart [DIR] stop every server of DIR and start it again on the same port
#   scripts/nats-test-server.sh crash [DIR]   kill -9 the first server of DIR (the others keep running)
#   scripts/nats-test-server.sh stop [DIR]    stop every server of DIR and delete DIR
#
# DIR defaults to $SIM_NATS_DIR or /tmp/sim-nats-test. Several servers may run at once in different DIRs. `start`
# exits non-zero when a server cannot start; nothing here touches a NATS service of the distribution.
# Each server pings its clients every second and drops one that misses 3 (the default, 2 min and 2, keeps a
# stopped simd's subscriptions for minutes); docs/operations.md, "Several nodes", recommends the same.
set -euo pipefail

cmd=${1:-}
dir=${2:-${SIM_NATS_DIR:-/tmp/sim-nats-test}}
name=nats-test-server
# shellcheck source=scripts/test-server-lib.sh
. "$(dirname "$0")/test-server-lib.sh"

stop_server() {
  local f
  for f in "$dir"/nats*.pid; do
    [ -f "$f" ] && stop_pid "$(cat "$f")"
  done
  remove_state "$dir" nats1.pid
}

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# run_server I: start server I from its configuration; wait until it listens.
run_server() {
  local i=$1 port
  port=$(cat "$dir/port$i")
  nohup nats-server -c "$dir/nats$i.conf" >/dev/null 2>&1 &
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.05
  done
  return 1
}

case "$cmd" in
  start)
    # shellcheck disable=SC2046
    install_packages $(missing_packages nats-server libnats-dev)
    mkdir -p "$dir"
    count=${SIM_NATS_SERVERS:-1}
    urls=()
    for i in $(seq 1 "$count"); do
      free_port >"$dir/port$i"
      free_port >"$dir/cport$i"
      urls+=("nats://127.0.0.1:$(cat "$dir/port$i")")
    done
    for i in $(seq 1 "$count"); do
      {
        echo "listen: 127.0.0.1:$(cat "$dir/port$i")"
        echo "pid_file: \"$dir/nats$i.pid\""
        echo "log_file: \"$dir/nats$i.log\""
        echo 'ping_interval: "1s"'
        echo 'ping_max: 3'
        if [ "$count" -gt 1 ]; then
          echo 'cluster {'
          echo '  name: sim-test'
          echo "  listen: 127.0.0.1:$(cat "$dir/cport$i")"
          echo '  routes: ['
          for j in $(seq 1 "$count"); do
            if [ "$j" -ne "$i" ]; then echo "    nats-route://127.0.0.1:$(cat "$dir/cport$j")"; fi
          done
          echo '  ]'
          echo '}'
        fi
      } >"$dir/nats$i.conf"
      if ! run_server "$i"; then
        stop_server
        die "nats-server $i did not start on port $(cat "$dir/port$i")"
      fi
    done
    if [ "$count" -gt 1 ]; then
      # Every server routes to every other before anyone connects.
      for _ in $(seq 1 200); do
        ready=1
        for i in $(seq 1 "$count"); do
          n=$(grep -c "Route connection created" "$dir/nats$i.log" 2>/dev/null || true)
          [ "${n:-0}" -ge $((count - 1)) ] || ready=0
        done
        [ "$ready" -eq 1 ] && break
        sleep 0.05
      done
      [ "$ready" -eq 1 ] || { stop_server; die "the NATS servers did not form a cluster"; }
    fi
    (IFS=,; echo "${urls[*]}") | tee "$dir/url"
    ;;
  restart)
    for f in "$dir"/nats*.pid; do
      [ -f "$f" ] && stop_pid "$(cat "$f")"
    done
    for conf in "$dir"/nats*.conf; do
      i=${conf##*/nats}
      i=${i%.conf}
      run_server "$i" || die "nats-server $i did not start again"
    done
    ;;
  crash)
    kill -9 "$(cat "$dir/nats1.pid")"
    ;;
  stop)
    stop_server
    ;;
  *)
    die "usage: $0 start|restart|crash|stop [DIR]"
    ;;
esac
