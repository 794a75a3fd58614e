#!/usr/bin/env bash
# Run a test program against a real database server: start a throwaway server with SERVER_SCRIPT (which installs
# the server if needed), run the program, stop the server. A server that cannot start is a test failure, never a
# skip. The program gets
#   SIM_TEST_BACKEND=KIND, SIM_TEST_DB_URL (TCP), SIM_TEST_DB_SOCKET_URL (Unix socket),
#   SIM_TEST_DB_RESTART (a shell command that restarts the server on the same port and data).
#   run-with-db-server.sh KIND PROGRAM SERVER_SCRIPT [program args...]
#   (KIND: mariadb | postgresql | nats; SERVER_SCRIPT: scripts/KIND-test-server.sh; a NATS server has no socket URL)
set -uo pipefail
kind=$1
binary=$2
server=$3
shift 3
state=$(mktemp -d "/tmp/sim-$kind.XXXXXX")
if ! url=$("$server" start "$state"); then
  echo "FAIL: the $kind test server did not start" >&2
  "$server" stop "$state" >/dev/null 2>&1
  rm -rf "$state"
  exit 1
fi
trap '"$server" stop "$state" >/dev/null 2>&1; rm -rf "$state"' EXIT
SIM_TEST_BACKEND="$kind" SIM_TEST_DB_URL="$url" SIM_TEST_DB_SOCKET_URL="$(cat "$state/socket-url" 2>/dev/null)" \
  SIM_TEST_DB_RESTART="$(printf '%q restart %q >/dev/null' "$server" "$state")" "$binary" "$@"
