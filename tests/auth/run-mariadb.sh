#!/usr/bin/env bash
# Run the auth conformance suite against a real MariaDB server: start a throwaway server (installing
# mariadb-server if needed), run the suite with SIM_MARIADB_URL, stop the server. A server that cannot start is a
# test failure, never a skip.
#   run-mariadb.sh CONFORMANCE_BINARY SERVER_SCRIPT [doctest args...]
set -uo pipefail
binary=$1
server=$2
shift 2
state=$(mktemp -d /tmp/sim-mariadb.XXXXXX)
if ! url=$("$server" start "$state"); then
  echo "FAIL: the MariaDB test server did not start" >&2
  "$server" stop "$state" >/dev/null 2>&1
  rm -rf "$state"
  exit 1
fi
trap '"$server" stop "$state" >/dev/null 2>&1; rm -rf "$state"' EXIT
SIM_TEST_BACKEND=mariadb SIM_MARIADB_URL="$url" SIM_MARIADB_SOCKET_URL="$(cat "$state/socket-url")" "$binary" "$@"
