#!/usr/bin/env bash
# A throwaway MariaDB server for libsim's tests.
#
#   scripts/mariadb-test-server.sh start [DIR]   install mariadb-server if missing, start mariadbd with a fresh
#                                                data directory under DIR, bound to 127.0.0.1 on a free port plus a
#                                                Unix socket, create a database and a user, print the URL
#   scripts/mariadb-test-server.sh restart [DIR] stop that server and start it again on the same port and data
#                                                (every connection is cut, as when an operator restarts it)
#   scripts/mariadb-test-server.sh stop [DIR]    stop that server and delete DIR
#
# DIR defaults to $SIM_MARIADB_DIR or /tmp/sim-mariadb-test. Several servers may run at once in different DIRs.
# `start` also writes DIR/url (TCP) and DIR/socket-url (Unix socket). It exits non-zero when the server cannot
# start; nothing here touches the distribution's own MariaDB service or its data.
set -euo pipefail

cmd=${1:-}
dir=${2:-${SIM_MARIADB_DIR:-/tmp/sim-mariadb-test}}
name=mariadb-test-server
# shellcheck source=scripts/test-server-lib.sh
. "$(dirname "$0")/test-server-lib.sh"

find_bin() {  # find_bin NAME...: the first that exists on PATH or in /usr/sbin, /usr/bin
  for name in "$@"; do
    for p in "$(command -v "$name" 2>/dev/null || true)" "/usr/sbin/$name" "/usr/bin/$name"; do
      if [ -n "$p" ] && [ -x "$p" ]; then
        echo "$p"
        return 0
      fi
    done
  done
  return 1
}

install_if_missing() {
  local missing
  mapfile -t missing < <(missing_packages libmariadb-dev)
  find_bin mariadbd mysqld >/dev/null || missing+=(mariadb-server)
  find_bin mariadb mysql >/dev/null || missing+=(mariadb-client)
  install_packages "${missing[@]}"
}

stop_server() {
  if [ -f "$dir/mariadbd.pid" ]; then
    stop_pid "$(cat "$dir/mariadbd.pid")"
  fi
}

# launch: start mariadbd on the data in $dir and the port in $dir/port; wait until it answers.
launch() {
  local mariadbd client port
  mariadbd=$(find_bin mariadbd mysqld) || die "mariadbd not found"
  client=$(find_bin mariadb mysql) || die "mariadb client not found"
  port=$(cat "$dir/port")
  local sock="$dir/mariadbd.sock"
  # Small buffers, no binary log: a test server, started and thrown away in seconds.
  nohup "$mariadbd" --no-defaults --user="$(id -un)" --datadir="$dir/data" --tmpdir="$dir/tmp" \
    --socket="$sock" --port="$port" --bind-address=127.0.0.1 --pid-file="$dir/mariadbd.pid" \
    --log-error="$dir/error.log" --skip-name-resolve --skip-log-bin --performance-schema=OFF \
    --innodb-buffer-pool-size=32M --innodb-log-file-size=16M --loose-innodb-use-native-aio=0 \
    --max-connections=50 >/dev/null 2>&1 &
  local pid=$!

  local up=0
  for _ in $(seq 1 600); do
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    if "$client" --no-defaults --protocol=socket --socket="$sock" -uroot -e "SELECT 1" >/dev/null 2>&1; then
      up=1
      break
    fi
    sleep 0.1
  done
  if [ "$up" -ne 1 ]; then
    tail -n 30 "$dir/error.log" >&2 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    die "mariadbd did not start"
  fi
  echo "$pid" >"$dir/mariadbd.pid"
}

start_server() {
  install_if_missing
  local install_db client
  install_db=$(find_bin mariadb-install-db mysql_install_db) || die "mariadb-install-db not found"
  client=$(find_bin mariadb mysql) || die "mariadb client not found"

  if [ -f "$dir/mariadbd.pid" ] && kill -0 "$(cat "$dir/mariadbd.pid")" 2>/dev/null; then
    die "a server is already running in $dir"
  fi
  rm -rf "$dir"
  mkdir -p "$dir/data" "$dir/tmp"
  touch "$dir/.sim-mariadb-test"
  local sock="$dir/mariadbd.sock"
  if [ "${#sock}" -gt 100 ]; then
    die "socket path too long: $sock"
  fi

  "$install_db" --no-defaults --datadir="$dir/data" --user="$(id -un)" --auth-root-authentication-method=normal \
    --skip-test-db >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; die "mariadb-install-db failed"; }

  local port
  port=$(free_port)
  echo "$port" >"$dir/port"
  launch

  local password
  password=$(random_password)
  "$client" --no-defaults --protocol=socket --socket="$sock" -uroot <<SQL || die "could not create the test database"
CREATE DATABASE simtest;
CREATE USER 'sim'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER 'sim'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON simtest.* TO 'sim'@'127.0.0.1';
GRANT ALL PRIVILEGES ON simtest.* TO 'sim'@'localhost';
SQL
  echo "mariadb://sim:$password@127.0.0.1:$port/simtest" >"$dir/url"
  echo "mariadb://sim:$password@localhost/simtest?socket=$sock" >"$dir/socket-url"
  chmod 600 "$dir/url" "$dir/socket-url"
  cat "$dir/url"
}

case "$cmd" in
  start) start_server ;;
  restart) stop_server && launch ;;
  stop) stop_server && remove_state "$dir" .sim-mariadb-test ;;
  *) die "usage: $0 start|restart|stop [DIR]" ;;
esac
