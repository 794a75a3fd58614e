#!/usr/bin/env bash
# A throwaway PostgreSQL server for libsim's tests.
#
#   scripts/postgres-test-server.sh start [DIR]    install postgresql if missing, initdb a fresh cluster under DIR,
#                                                  start it on 127.0.0.1 on a free port plus a Unix socket in DIR,
#                                                  create a database and a user, print the URL
#   scripts/postgres-test-server.sh restart [DIR]  restart that server (same port, same data): every connection is
#                                                  cut, as when an operator restarts it
#   scripts/postgres-test-server.sh stop [DIR]     stop that server and delete DIR
#
# DIR defaults to $SIM_POSTGRES_DIR or /tmp/sim-postgres-test. Several servers may run at once in different DIRs.
# `start` also writes DIR/url (TCP) and DIR/socket-url (Unix socket). PostgreSQL refuses to run as root: run as
# root, the server runs as the unprivileged `postgres` account the Debian package creates (DIR is handed to it).
# Nothing here touches the distribution's own cluster or its data.
set -euo pipefail

cmd=${1:-}
dir=${2:-${SIM_POSTGRES_DIR:-/tmp/sim-postgres-test}}
bin=${SIM_POSTGRES_BIN:-/usr/lib/postgresql/15/bin}
name=postgres-test-server
# shellcheck source=scripts/test-server-lib.sh
. "$(dirname "$0")/test-server-lib.sh"

# as_server COMMAND...: run a server program as the account that owns the cluster.
as_server() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ctl_() {
  as_server "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" "$@"
}

start_server() {
  local missing
  mapfile -t missing < <(missing_packages postgresql libpq-dev)
  install_packages "${missing[@]}"
  [ -x "$bin/initdb" ] || die "$bin/initdb not found (set SIM_POSTGRES_BIN)"

  if [ -f "$dir/data/postmaster.pid" ] && kill -0 "$(head -n 1 "$dir/data/postmaster.pid")" 2>/dev/null; then
    die "a server is already running in $dir"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  touch "$dir/.sim-postgres-test"
  local password port
  password=$(random_password)
  port=$(free_port)
  if [ "${#dir}" -gt 80 ]; then
    die "socket folder too long: $dir"
  fi
  (umask 077 && echo "$password" >"$dir/pwfile")
  if [ "$(id -u)" -eq 0 ]; then
    getent passwd postgres >/dev/null || die "no postgres account to run the server as (install postgresql)"
    chown -R postgres: "$dir"
  fi

  # The superuser is `sim`, with a password; every connection (TCP and socket) must give it.
  as_server "$bin/initdb" -D "$dir/data" -U sim --pwfile="$dir/pwfile" --auth=scram-sha-256 -E UTF8 --no-locale \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$dir/pwfile"
  # Small buffers: a test server, started and thrown away in seconds.
  pg_ctl_ -w -t 60 -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_buffers=16MB -c max_connections=50" \
    start >/dev/null || { tail -n 30 "$dir/server.log" >&2 2>/dev/null || true; die "postgres did not start"; }

  PGPASSWORD=$password "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U sim -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE simtest" >/dev/null || die "could not create the test database"
  echo "postgresql://sim:$password@127.0.0.1:$port/simtest" >"$dir/url"
  echo "postgresql://sim:$password@localhost:$port/simtest?socket=$dir" >"$dir/socket-url"
  chmod 600 "$dir/url" "$dir/socket-url"
  cat "$dir/url"
}

stop_server() {
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pg_ctl_ -m fast -w -t 30 stop >/dev/null 2>&1 || stop_pid "$(head -n 1 "$dir/data/postmaster.pid")"
}

case "$cmd" in
  start) start_server ;;
  restart) pg_ctl_ -m fast -w -t 60 restart >/dev/null ;;
  stop) stop_server && remove_state "$dir" .sim-postgres-test ;;
  *) die "usage: $0 start|restart|stop [DIR]" ;;
esac
