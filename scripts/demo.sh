#!/usr/bin/env bash
# The main job: build libsim and show both conversation modes, each against its own simd on a temporary SQLite
# database, printing each protocol step:
#  1. server-assigned (the seed): Triple-DES conversation keys made by the server; login, waiting, KEYGEN, messages
#     across key rotations, leaving.
#  2. end-to-end (simd's default): prekeys, X3DH from a prekey bundle, equal safety numbers on both sides, Double
#     Ratchet messages, a message to an offline user stored by the server and delivered on login, receipts.
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

# start_simd NAME ARGS...: start simd on its own data directory; sets simd_pid and port.
start_simd() {
  local name=$1
  shift
  build/tools/simd --listen 127.0.0.1:0 --port-file "$work/$name.port" --data-dir "$work/$name" \
    --bcrypt-cost 10 --log-level warning "$@" &
  simd_pid=$!
  for _ in $(seq 1 100); do
    [ -s "$work/$name.port" ] && break
    kill -0 "$simd_pid" 2>/dev/null || { echo "demo: simd exited early" >&2; exit 1; }
    sleep 0.05
  done
  [ -s "$work/$name.port" ] || { echo "demo: simd did not start" >&2; exit 1; }
  port=$(cat "$work/$name.port")
}

stop_simd() {
  kill -TERM "$simd_pid"
  wait "$simd_pid"
  simd_pid=""
  echo "== simd stopped cleanly"
}

echo "######## Part 1: the seed's server-assigned mode"
echo "== 0. simd starts (--conversation-mode server-assigned): SQLite database in $work/seed, server key created"
echo "      (0600), TDES conversation keys made by the server"
start_simd seed --conversation-mode server-assigned --conversation-suite tdes
build/examples/seed_demo 127.0.0.1 "$port" "$rotation"
stop_simd

echo
echo "######## Part 2: end-to-end mode (simd's default)"
echo "== 0. a second simd starts (--conversation-mode e2e): SQLite database in $work/e2e"
start_simd e2e --conversation-mode e2e
build/examples/seed_demo --e2e 127.0.0.1 "$port"
stop_simd
