#!/bin/bash
# Smoke test of the examples: the tiny server and two tiny clients; each client must get the other's message.
# Twice: the clients keep their identity in their default state files, so the second run is no key change to peers
# (same safety number, not a first contact; issue 14 finding 6).
# Needs TINY_SERVER and TINY_CLIENT. Stops what it started and removes its directory, also on failure.
set -u
: "${TINY_SERVER:?}" "${TINY_CLIENT:?}"
T=$(mktemp -d "${TMPDIR:-/tmp}/sim-tiny-XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() {
    echo "FAIL [tiny]: $*" >&2
    for f in "$T"/*; do
        echo "--- $f" >&2
        cat "$f" >&2
    done
    exit 1
}

"$TINY_SERVER" >"$T/server.out" 2>"$T/server.err" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 100); do
    [ -s "$T/server.out" ] && break
    kill -0 "$SERVER" 2>/dev/null || fail "tiny_server exited"
    sleep 0.1
done
read -r word PORT _ <"$T/server.out" || fail "no output from tiny_server"
[ "$word" = port ] && [ "$PORT" -gt 0 ] || fail "unexpected first line: $(cat "$T/server.out")"
FP=$(sed -n 's/^port [0-9]* fingerprint //p' "$T/server.out")

# The clients' default state files go under $XDG_CONFIG_HOME/libsim/keys.
export XDG_CONFIG_HOME="$T/config"

# bob answers whoever writes to him; alice opens the conversation with bob. (Only one side opens: the server
# re-keys a conversation on every open, so two clients opening each other at once would race.)
exchange() {  # exchange ROUND
    local round=$1
    timeout 60 "$TINY_CLIENT" "$PORT" bob "bob's password" >"$T/bob$round.out" 2>"$T/bob$round.err" &
    BOB=$!
    PIDS+=("$BOB")
    # alice needs bob's prekeys, which his client publishes when it logs in
    for _ in $(seq 1 100); do
        grep -q "^bob: logged in" "$T/bob$round.out" && break
        kill -0 "$BOB" 2>/dev/null || fail "bob's client exited (round $round)"
        sleep 0.1
    done
    timeout 60 "$TINY_CLIENT" "$PORT" alice "alice's password" bob >"$T/alice$round.out" 2>"$T/alice$round.err" &
    ALICE=$!
    PIDS+=("$ALICE")
    wait "$ALICE" || fail "alice's client failed (round $round)"
    wait "$BOB" || fail "bob's client failed (round $round)"
    grep -qx "alice got from bob: hello from bob" "$T/alice$round.out" || fail "alice did not get bob's message"
    grep -qx "bob got from alice: hello from alice" "$T/bob$round.out" || fail "bob did not get alice's message"
    grep -qx "alice: server fingerprint $FP" "$T/alice$round.out" || fail "alice saw another fingerprint"
    ! grep -q "identity key .* changed" "$T/alice$round.out" "$T/bob$round.out" || fail "an identity key changed"
}
exchange 1
grep -q "^alice: keyed with bob, safety number [0-9 ]* (first contact)$" "$T/alice1.out" ||
    fail "round 1: alice did not key with bob on first contact"
[ -f "$T/config/libsim/keys/127.0.0.1_${PORT}-alice.db" ] || fail "alice's default state file is missing"
exchange 2
# The same identities: the safety number is the one of round 1, and bob's key is already pinned.
safety=$(sed -n 's/^alice: keyed with bob, safety number \([0-9 ]*\) (first contact)$/\1/p' "$T/alice1.out")
grep -qx "alice: keyed with bob, safety number $safety" "$T/alice2.out" ||
    fail "round 2: not the same identities as in round 1 (a new identity looks like a key change to peers)"

kill -TERM "$SERVER"
wait "$SERVER"
status=$?
[ "$status" -eq 0 ] || fail "tiny_server exited with $status on SIGTERM"
exit 0
