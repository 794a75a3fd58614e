#!/usr/bin/env bash
# The main job: build libsim, start simd on a temporary SQLite database with the seed's Triple-DES conversation
# suite, and run alice and bob through the seed's whole flow (login, waiting, KEYGEN, messages across key
# rotations, leaving), printing each protocol step.
# Usage: scripts/demo.sh [ROTATION_SECONDS]   (default 2: the seed rotates every 30 s; shortened for the demo)
set -euo pipefail
cd "$(dirname "$0")/.."
rotation=${1:-2}

scripts/install-deps.sh
if [ ! -f build/build.ninja ]; then
  meson setup build >/dev/null
fi
ninja -C build >/dev/null

work=$(mktemp -d /tmp/libsim-demo.XXXXXX)
simd_pid=""
cleanup() {
  if [ -n "$simd_pid" ] && kill -0 "$simd_pid" 2>/dev/null; then
    kill -TERM "$simd_pid" 2>/dev/null || true
    wait "$simd_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== 0. simd starts: SQLite database in $work, server key created (0600), TDES conversation keys"
build/tools/simd --listen 127.0.0.1:0 --port-file "$work/port" --data-dir "$work/data" \
  --conversation-suite tdes --bcrypt-cost 10 --log-level warning &
simd_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/port" ] && break
  kill -0 "$simd_pid" 2>/dev/null || { echo "demo: simd exited early" >&2; exit 1; }
  sleep 0.05
done
[ -s "$work/port" ] || { echo "demo: simd did not start" >&2; exit 1; }
port=$(cat "$work/port")

build/examples/seed_demo 127.0.0.1 "$port" "$rotation"

kill -TERM "$simd_pid"
wait "$simd_pid"
simd_pid=""
echo "== simd stopped cleanly"
