#!/usr/bin/env bash
# Run a test binary against a real NATS server: start a throwaway one (installing nats-server if needed), run the
# binary with SIM_TEST_NATS_URL, stop the server. A server that cannot start is a test failure, never a skip.
#   run-nats.sh BINARY SERVER_SCRIPT [args...]
set -uo pipefail
binary=$1
server=$2
shift 2
state=$(mktemp -d /tmp/sim-nats.XXXXXX)
if ! url=$("$server" start "$state"); then
  echo "FAIL: the NATS test server did not start" >&2
  "$server" stop "$state" >/dev/null 2>&1
  exit 1
fi
trap '"$server" stop "$state" >/dev/null 2>&1' EXIT
SIM_TEST_NATS_URL="$url" SIM_TEST_NATS_SERVER_DIR="$state" "$binary" "$@"
