#!/bin/bash
# Smoke tests of the command-line tools: smoke.sh CASE.
# Needs SIMD and SIM (paths of the programs), for the 'docs' case TOOLS_DOC (docs/tools.md), and for the
# 'bench-metrics' case SIM_BENCH.
# Every case works in its own temporary directory; the trap stops every process it started and removes the
# directory, also when a check fails.
set -u

CASE=${1:?usage: smoke.sh CASE}
: "${SIMD:?set SIMD to the simd program}"
: "${SIM:?set SIM to the sim program}"

T=$(mktemp -d "${TMPDIR:-/tmp}/sim-tools-XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        # give each a moment, then make sure
        for _ in 1 2 3 4 5 6 7 8 9 10; do
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

# The client keeps its pins and tokens here, never in the real home directory.
export XDG_CONFIG_HOME="$T/cfg"
export HOME="$T/home"
unset SIM_PASSWORD

fail() {
    echo "FAIL [$CASE]: $*" >&2
    for f in "$T"/*.out "$T"/*.err; do
        [ -s "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
    done
    exit 1
}

# expect_status CODE CMD...: run CMD (stdout/stderr to $T/last.out / last.err) and check its exit status.
expect_status() {
    local want=$1
    shift
    "$@" >"$T/last.out" 2>"$T/last.err" </dev/null
    local got=$?
    [ "$got" -eq "$want" ] || fail "expected exit $want, got $got: $*"
}

# start_simd NAME ARGS...: start simd with its data in $T/NAME on an ephemeral port; sets SIMD_PID and PORT.
start_simd() {
    local name=$1
    shift
    rm -f "$T/$name.port"
    "$SIMD" --listen 127.0.0.1:0 --port-file "$T/$name.port" --data-dir "$T/$name" --bcrypt-cost 4 \
        --log-level warning "$@" >"$T/$name.out" 2>"$T/$name.err" </dev/null &
    SIMD_PID=$!
    PIDS+=("$SIMD_PID")
    for _ in $(seq 1 100); do
        if [ -s "$T/$name.port" ]; then
            PORT=$(cat "$T/$name.port")
            return 0
        fi
        kill -0 "$SIMD_PID" 2>/dev/null || fail "simd exited during start-up"
        sleep 0.1
    done
    fail "simd did not write its port file"
}

# stop_simd: SIGTERM and check for exit status 0.
stop_simd() {
    kill -TERM "$SIMD_PID" || fail "simd is not running"
    wait_exit "$SIMD_PID" 10 || fail "simd did not stop on SIGTERM"
    [ "$EXIT_STATUS" -eq 0 ] || fail "simd exited with $EXIT_STATUS on SIGTERM"
}

# wait_exit PID SECONDS: wait for a child to end; sets EXIT_STATUS. Returns 1 on timeout.
wait_exit() {
    local pid=$1 limit=$2
    for _ in $(seq 1 $((limit * 10))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid"
            EXIT_STATUS=$?
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# sim_as USER PASSWORD ARGS...: run sim against the current server with a password from the environment.
sim_as() {
    local password=$1
    shift
    SIM_PASSWORD="$password" timeout 60 "$SIM" --server "127.0.0.1:$PORT" "$@"
}

file_mode() { stat -c %a "$1"; }

# wait_for FILE TEXT: until FILE has a line containing TEXT (10 s)
wait_for() {
    for _ in $(seq 1 100); do
        grep -qF -- "$2" "$1" && return 0
        sleep 0.1
    done
    fail "no '$2' in $1"
}

# wait_for_count FILE TEXT N: until FILE has N lines containing TEXT (10 s)
wait_for_count() {
    for _ in $(seq 1 100); do
        [ "$(grep -cF -- "$2" "$1")" -ge "$3" ] && return 0
        sleep 0.1
    done
    fail "fewer than $3 lines with '$2' in $1"
}

# The admin endpoint of the simd at $MPORT (found by admin_port).
# http REQUEST-LINE: one request, the whole answer in $T/http.out
http() {
    exec 3<>"/dev/tcp/127.0.0.1/$MPORT" || fail "cannot connect to the admin endpoint"
    printf '%s\r\nHost: test\r\n\r\n' "$1" >&3
    timeout 10 cat <&3 >"$T/http.out"
    exec 3<&-
}
# metric SERIES: its value in the last scrape (SERIES is the name with its labels, as printed)
metric() { sed -n "s/^$1 \([0-9]*\)\r\{0,1\}$/\1/p" "$T/http.out"; }
# connections: the open connections in every state, in the last scrape
connections() { awk '/^simd_connections\{state="[a-z]*"\} / { n += $2 } END { print n + 0 }' "$T/http.out"; }
# expect_metric NAME VALUE: scrape until NAME has VALUE (5 s)
expect_metric() {
    for _ in $(seq 1 50); do
        http "GET /metrics HTTP/1.0"
        [ "$(metric "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    fail "$1 is '$(metric "$1")', expected $2"
}

# admin_port NAME: the admin port of simd NAME (started with --metrics-address 127.0.0.1:0 --log-level info) in MPORT
admin_port() {
    wait_for "$T/$1.err" "admin endpoint listening"
    MPORT=$(sed -n 's/.*admin endpoint listening.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/$1.err" | head -n 1)
    [ -n "$MPORT" ] || fail "no admin port in the log"
}

case "$CASE" in

help)
    expect_status 0 "$SIMD" --help
    grep -q -- "--listen ADDR:PORT" "$T/last.out" || fail "simd --help does not describe --listen"
    grep -q "user add NAME" "$T/last.out" || fail "simd --help does not describe the user commands"
    expect_status 0 "$SIMD" -h
    expect_status 0 "$SIMD" --version
    grep -q "^simd (libsim) [0-9]" "$T/last.out" || fail "simd --version"
    expect_status 0 "$SIM" --help
    grep -q -- "--server HOST:PORT" "$T/last.out" || fail "sim --help does not describe --server"
    grep -q "send USER PEER MESSAGE" "$T/last.out" || fail "sim --help does not describe send"
    expect_status 0 "$SIM" --version
    grep -q "^sim (libsim) [0-9]" "$T/last.out" || fail "sim --version"
    # help wins over everything else, even a bad command
    expect_status 0 "$SIM" frobnicate --help
    ;;

bad-options)
    for args in "--bogus" "-x" "--listen" "--listen nonsense" "--listen 127.0.0.1:70000" "--bcrypt-cost 99" \
        "--bcrypt-cost 3" "--registration sometimes" "--hash md5" "--conversation-suite rot13" \
        "--channel-suites aes,des" "--log-level loud" "--log-format xml" "--idle-timeout -1" "--workers 0" \
        "--max-frame 12" "--db oracle://x" "--help=yes" "frobnicate" "user" "user add" "user list extra" \
        "user add bad!name" "-c $T/missing.conf" "--broker nats://127.0.0.1:9 --node-id a" \
        "--broker nats://127.0.0.1:9 --node-id a --db memory:" "--broker nats://127.0.0.1:9" "--node-id a" \
        "--broker redis://127.0.0.1:9 --node-id a --db postgresql://u:p@127.0.0.1:9/d" \
        "--broker nats://127.0.0.1:9 --node-id a --db postgresql://u:p@127.0.0.1:9/d --conversation-mode server-assigned"; do
        # shellcheck disable=SC2086
        expect_status 2 "$SIMD" --data-dir "$T/never" $args
        [ -s "$T/last.err" ] || fail "no message for simd $args"
        grep -q "Try 'simd --help'" "$T/last.err" || fail "no hint for simd $args"
    done
    [ -e "$T/never" ] && fail "a usage error created the data directory"
    expect_status 2 "$SIMD" --data-dir "$T/never" --broker nats://127.0.0.1:9 --node-id a
    grep -q "MariaDB or PostgreSQL" "$T/last.err" || fail "simd --broker with SQLite does not say what it needs"
    expect_status 2 "$SIMD" --data-dir "$T/never" --broker nats://127.0.0.1:9 --node-id a \
        --db postgresql://u:p@127.0.0.1:9/d --conversation-mode server-assigned
    grep -q "loses messages" "$T/last.err" || fail "simd --broker in server-assigned mode does not say why it refuses"
    grep -q "unknown option '--bogus'" <("$SIMD" --bogus 2>&1) || fail "simd does not name the bad option"
    for args in "--bogus" "" "chat" "send alice bob" "recv" "recv alice bob" "register" "frobnicate alice" \
        "--timeout soon recv bob" "--timeout -3 recv bob" "--trust always recv bob" "--count 0 recv bob" \
        "--count 3 send alice bob hi" "--server nohost recv bob" "--server 127.0.0.1:0 recv bob" \
        "--fingerprint abcd recv bob" "--rotation-seconds x recv bob" "send al! bob hi" "send alice b hi"; do
        # shellcheck disable=SC2086
        expect_status 2 "$SIM" $args
        [ -s "$T/last.err" ] || fail "no message for sim $args"
    done
    # no password source at all (no file, no variable, no terminal) is a usage error too
    expect_status 2 setsid -w "$SIM" --server 127.0.0.1:9 --no-session recv bob
    grep -q "password" "$T/last.err" || fail "missing password not explained"
    ;;

config-file)
    mkdir -p "$T/conf"
    cat >"$T/conf/simd.conf" <<EOF
# a comment
listen = 127.0.0.1:0
port-file = $T/conf.port
data-dir = $T/from-file
bcrypt-cost = 4
log-level = warning
EOF
    # the command line wins over the file: the data directory comes from the flag
    "$SIMD" -c "$T/conf/simd.conf" --data-dir "$T/from-flag" >"$T/conf.out" 2>"$T/conf.err" </dev/null &
    SIMD_PID=$!
    PIDS+=("$SIMD_PID")
    for _ in $(seq 1 100); do
        [ -s "$T/conf.port" ] && break
        kill -0 "$SIMD_PID" 2>/dev/null || fail "simd -c exited during start-up"
        sleep 0.1
    done
    [ -s "$T/conf.port" ] || fail "simd -c did not write the port file named in the file"
    [ -f "$T/from-flag/server.key" ] || fail "--data-dir on the command line did not win"
    [ -e "$T/from-file" ] && fail "the file's data-dir was used despite the flag"
    stop_simd
    printf 'listen = 127.0.0.1:0\nbogus-key = 1\n' >"$T/conf/bad.conf"
    expect_status 2 "$SIMD" -c "$T/conf/bad.conf"
    grep -q "bad.conf:2" "$T/last.err" || fail "config error does not name file and line"
    printf 'listen\n' >"$T/conf/bad2.conf"
    expect_status 2 "$SIMD" --config "$T/conf/bad2.conf"
    printf 'help = true\n' >"$T/conf/bad3.conf"
    expect_status 2 "$SIMD" --config "$T/conf/bad3.conf"
    printf 'server = 127.0.0.1:1\nbcrypt-cost = 4\n' >"$T/conf/sim.conf"
    expect_status 2 "$SIM" -c "$T/conf/sim.conf" recv bob
    grep -q "sim.conf:2: unknown key 'bcrypt-cost'" "$T/last.err" || fail "sim config error not explained"
    ;;

simd-start)
    # no key yet: 'simd fingerprint' says so and creates nothing
    expect_status 1 "$SIMD" --data-dir "$T/srv" fingerprint
    grep -q "no server key at $T/srv/server.key yet" "$T/last.err" || fail "fingerprint without a key not explained"
    [ -e "$T/srv" ] && fail "simd fingerprint created the data directory"
    start_simd srv
    line=$(head -n 1 "$T/srv.out")
    [[ "$line" =~ ^simd:\ listening\ on\ 127\.0\.0\.1:([0-9]+)\ fingerprint\ (([0-9a-f]{4}\ ){15}[0-9a-f]{4})$ ]] ||
        fail "unexpected start line: $line"
    [ "${BASH_REMATCH[1]}" = "$PORT" ] || fail "start line port ${BASH_REMATCH[1]} differs from port file $PORT"
    [ "$PORT" -gt 0 ] || fail "port 0 in the port file"
    fp1=${BASH_REMATCH[2]}
    expect_status 0 "$SIMD" --data-dir "$T/srv" fingerprint
    [ "$(cat "$T/last.out")" = "$fp1" ] || fail "simd fingerprint printed '$(cat "$T/last.out")', not '$fp1'"
    expect_status 2 "$SIMD" --data-dir "$T/srv" fingerprint extra
    [ "$(file_mode "$T/srv")" = 700 ] || fail "data dir mode $(file_mode "$T/srv")"
    [ "$(file_mode "$T/srv/server.key")" = 600 ] || fail "server key mode $(file_mode "$T/srv/server.key")"
    [ "$(file_mode "$T/srv/master.key")" = 600 ] || fail "master key mode $(file_mode "$T/srv/master.key")"
    [ "$(stat -c %s "$T/srv/server.key")" = 32 ] || fail "server key is not 32 bytes"
    [ "$(stat -c %s "$T/srv/master.key")" = 32 ] || fail "master key is not 32 bytes"
    [ -f "$T/srv/simd.db" ] || fail "no database at DATA/simd.db"
    # --log-level warning: the info lines are not there
    grep -q "level=info" "$T/srv.err" && fail "info lines despite --log-level warning"
    stop_simd
    # the key persists: same fingerprint after a restart
    start_simd srv --log-level info --log-format json
    line=$(head -n 1 "$T/srv.out")
    [ "${line##* fingerprint }" = "$fp1" ] || fail "fingerprint changed across a restart"
    grep -q '"level":"info","msg":"listening"' "$T/srv.err" || fail "no JSON log line"
    grep -q "open registration on a non-loopback" "$T/srv.err" && fail "registration warning on loopback"
    stop_simd
    # open registration on every address: a warning at start; closed registration there: none
    start_simd pub --listen 0.0.0.0:0
    wait_for "$T/pub.err" 'level=warning msg="open registration on a non-loopback address'
    grep -q 'addr=0.0.0.0:' "$T/pub.err" || fail "the warning does not name the address"
    stop_simd
    start_simd pub --listen 0.0.0.0:0 --registration closed
    wait_for "$T/pub.out" "simd: listening on"
    grep -q "open registration" "$T/pub.err" && fail "registration warning despite --registration closed"
    stop_simd
    # the port is really taken while it runs: a second simd on the same port fails cleanly
    start_simd srv
    expect_status 1 "$SIMD" --listen "127.0.0.1:$PORT" --data-dir "$T/srv2" --bcrypt-cost 4
    grep -q "cannot listen" "$T/last.err" || fail "bind failure not explained"
    # a second simd on the same data directory refuses to start, on another port too; user commands still work
    expect_status 1 timeout 10 "$SIMD" --listen 127.0.0.1:0 --data-dir "$T/srv" --bcrypt-cost 4
    grep -q "another simd is running on the data directory $T/srv" "$T/last.err" || fail "data dir lock not explained"
    expect_status 0 "$SIMD" --data-dir "$T/srv" user list
    stop_simd
    ;;

key-permissions)
    start_simd srv
    stop_simd
    chmod 640 "$T/srv/server.key"
    expect_status 1 "$SIMD" --listen 127.0.0.1:0 --data-dir "$T/srv" --bcrypt-cost 4
    grep -q "chmod 600" "$T/last.err" || fail "group-readable key refused without a hint"
    chmod 604 "$T/srv/server.key"
    expect_status 1 "$SIMD" --listen 127.0.0.1:0 --data-dir "$T/srv" --bcrypt-cost 4
    chmod 600 "$T/srv/server.key"
    chmod 644 "$T/srv/master.key"
    expect_status 1 "$SIMD" --listen 127.0.0.1:0 --data-dir "$T/srv" --bcrypt-cost 4
    chmod 600 "$T/srv/master.key"
    head -c 31 /dev/zero >"$T/short.key"
    chmod 600 "$T/short.key"
    expect_status 1 "$SIMD" --listen 127.0.0.1:0 --data-dir "$T/srv" --key "$T/short.key" --bcrypt-cost 4
    grep -q "32 bytes" "$T/last.err" || fail "short key not explained"
    # a good key again: starts
    start_simd srv
    stop_simd
    ;;

user-admin)
    printf 'alice password\n' >"$T/alice.pw"
    printf 'bob password\n' >"$T/bob.pw"
    D=(--data-dir "$T/srv" --bcrypt-cost 4)
    # from the wrong directory: a clear error, and no empty new database
    for cmd in "user list" "user delete bob" "user revoke bob" "backup $T/copy.db"; do
        # shellcheck disable=SC2086
        expect_status 1 "$SIMD" "${D[@]}" $cmd
        grep -q "no simd database at $T/srv/simd.db (use --data-dir or --db)" "$T/last.err" ||
            fail "$cmd without a database: $(cat "$T/last.err")"
    done
    expect_status 1 "$SIMD" --db "sqlite:$T/other.db" user passwd bob --password-file "$T/bob.pw"
    grep -q "no simd database at $T/other.db" "$T/last.err" || fail "user passwd without a database"
    [ -e "$T/srv" ] || [ -e "$T/other.db" ] && fail "a user command created a database"
    # user add creates it (accounts before the first start), and says so
    expect_status 0 "$SIMD" "${D[@]}" user add Alice --password-file "$T/alice.pw"
    grep -q "added user alice" "$T/last.out" || fail "user add did not confirm"
    grep -q "created the database $T/srv/simd.db" "$T/last.out" || fail "user add did not say it created the database"
    expect_status 0 env SIM_PASSWORD='bob password' "$SIMD" "${D[@]}" user add bob
    expect_status 1 "$SIMD" "${D[@]}" user add alice --password-file "$T/alice.pw"
    grep -q "already exists" "$T/last.err" || fail "duplicate user not explained"
    expect_status 0 "$SIMD" "${D[@]}" user list
    [ "$(cat "$T/last.out")" = "$(printf 'alice\nbob')" ] || fail "user list: $(cat "$T/last.out")"
    # no password source: a usage error, nothing created
    expect_status 2 setsid -w "$SIMD" "${D[@]}" user add carol
    expect_status 0 "$SIMD" "${D[@]}" user list
    grep -q carol "$T/last.out" && fail "carol was created without a password"
    # closed registration: only the accounts made above can log in, with their passwords
    start_simd srv --registration closed
    # a mistyped first password: refused by the server, and it does not seal a new end-to-end state
    expect_status 1 sim_as 'bob pasword' --timeout 1 recv bob
    grep -q "login refused" "$T/last.err" || fail "wrong first password not refused"
    ls "$XDG_CONFIG_HOME"/libsim/keys/*bob* 2>/dev/null && fail "a refused first login left a state file"
    # bob logs in once: his client publishes the prekeys others need to write to him end to end
    expect_status 0 sim_as 'bob password' --timeout 1 recv bob
    sim_as 'bob password' --timeout 30 recv bob --count 2 >"$T/recv.out" 2>"$T/recv.err" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    sim_as '' --password-file "$T/alice.pw" send alice bob "through a closed server" >"$T/send.out" 2>"$T/send.err" ||
        fail "send as an admin-created user failed"
    for _ in $(seq 1 100); do
        grep -qx "alice: through a closed server" "$T/recv.out" && break
        sleep 0.1
    done
    grep -qx "alice: through a closed server" "$T/recv.out" || fail "message not received"
    # the admin ends bob's sessions from another process: his live recv is closed within a second or two
    expect_status 0 "$SIMD" "${D[@]}" user revoke bob
    wait_exit "$RECV_PID" 5 || fail "a revoked session stayed open"
    [ "$EXIT_STATUS" -eq 1 ] || fail "recv exited with $EXIT_STATUS after the revocation"
    grep -q "ended by the server's administrator" "$T/recv.err" || fail "revocation not explained: $(cat "$T/recv.err")"
    # the admin logs alice out everywhere: the token her login was issued is revoked
    expect_status 0 "$SIMD" "${D[@]}" user revoke alice
    grep -q "revoked [1-9][0-9]* session token" "$T/last.out" || fail "user revoke: $(cat "$T/last.out")"
    expect_status 2 "$SIMD" "${D[@]}" user revoke
    expect_status 1 sim_as 'whatever' --no-session send mallory bob hi
    grep -q "login refused" "$T/last.err" || fail "unknown user not refused under closed registration"
    # passwd while the server runs: the old password stops working, also through the token it opened
    expect_status 0 sim_as 'alice password' --timeout 10 send alice bob "before the change"
    printf 'new alice password\n' >"$T/alice2.pw"
    expect_status 0 "$SIMD" "${D[@]}" user passwd alice --password-file "$T/alice2.pw"
    grep -q "revoked 1 session token" "$T/last.out" || fail "user passwd kept the sessions: $(cat "$T/last.out")"
    expect_status 1 sim_as 'alice password' --timeout 3 send alice bob hi
    grep -q "login refused" "$T/last.err" || fail "old password still accepted after passwd"
    # her local end-to-end state is still sealed under the old password: a clear message and the way out
    expect_status 1 sim_as 'new alice password' --timeout 3 send alice bob hi
    grep -q "wrong password for the end-to-end state.*sim rekey alice" "$T/last.err" ||
        fail "state/server disagreement not explained: $(cat "$T/last.err")"
    printf 'not her old password\n' >"$T/wrong.pw"
    expect_status 1 sim_as 'new alice password' --old-password-file "$T/wrong.pw" rekey alice
    grep -q "wrong password for the end-to-end state" "$T/last.err" || fail "rekey with a wrong old password"
    expect_status 1 sim_as 'not the new one' --old-password-file "$T/alice.pw" --timeout 3 rekey alice
    grep -q "login refused" "$T/last.err" || fail "rekey to a password the server does not have"
    expect_status 0 sim_as 'new alice password' --old-password-file "$T/alice.pw" --timeout 10 rekey alice
    grep -q "now sealed" "$T/last.out" || fail "rekey did not confirm"
    expect_status 0 sim_as 'new alice password' --no-session --timeout 10 send alice bob hi
    grep -q "message to bob" "$T/last.err" || fail "new password not accepted after rekey"
    expect_status 2 sim_as 'new alice password' --keys-dir "$T/none" rekey alice
    grep -q "no end-to-end state to rekey" "$T/last.err" || fail "rekey without a state"
    # the user changes the password from the client: the server and the local state in one step
    printf 'third alice password\n' >"$T/alice3.pw"
    expect_status 1 sim_as 'new alice password' --new-password-file "$T/missing.pw" passwd alice
    expect_status 0 sim_as 'new alice password' --new-password-file "$T/alice3.pw" --timeout 10 passwd alice
    grep -q "password of alice at .* is changed" "$T/last.out" || fail "passwd did not confirm: $(cat "$T/last.out")"
    expect_status 1 sim_as 'new alice password' --no-session --timeout 3 send alice bob hi
    grep -q "wrong password for the end-to-end state" "$T/last.err" || fail "state still opens with the old password"
    expect_status 0 sim_as 'third alice password' --no-session --timeout 10 send alice bob "after passwd"
    grep -q "message to bob" "$T/last.err" || fail "new password not accepted after passwd"
    expect_status 0 sim_as 'third alice password' --timeout 10 send alice bob "with the stored token"
    # delete: gone from the list and from logins
    expect_status 0 "$SIMD" "${D[@]}" user delete alice
    expect_status 1 "$SIMD" "${D[@]}" user delete alice
    grep -q "no user 'alice'" "$T/last.err" || fail "deleting a missing user not explained"
    expect_status 0 "$SIMD" "${D[@]}" user list
    [ "$(cat "$T/last.out")" = "bob" ] || fail "user list after delete: $(cat "$T/last.out")"
    expect_status 1 sim_as 'third alice password' --no-session send alice bob hi
    grep -q "login refused" "$T/last.err" || fail "deleted user not refused"
    stop_simd
    ;;

send-recv)
    start_simd srv
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob
    cp "$T/last.err" "$T/first.err"
    sim_as 'bob pw' --timeout 20 recv bob --count 3 >"$T/recv.out" 2>"$T/recv.err" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    sim_as 'alice pw' send alice bob hello "world" >"$T/send.out" 2>"$T/send.err" || fail "sim send failed"
    sim_as 'alice pw' send Alice BOB 'second message' >>"$T/send.out" 2>>"$T/send.err" || fail "second send failed"
    # a message that tries to drive the receiver's terminal (ESC, CR, a C1 CSI) is printed defused
    sim_as 'alice pw' send alice bob -- $'-red\e[31m\rX\xc2\x9b2J' >>"$T/send.out" 2>>"$T/send.err" ||
        fail "third send failed"
    wait_exit "$RECV_PID" 20 || fail "recv did not finish"
    [ "$EXIT_STATUS" -eq 0 ] || fail "recv exited with $EXIT_STATUS"
    [ "$(cat "$T/recv.out")" = "$(printf 'alice: hello world\nalice: second message\nalice: -red?[31m?X?2J')" ] ||
        fail "recv printed: $(cat -v "$T/recv.out")"
    grep -q "end-to-end conversation with bob (AES-256-GCM); safety number [0-9 ]\{71\}$" "$T/send.err" ||
        fail "send did not show the end-to-end conversation and its safety number"
    grep -q "message to bob delivered" "$T/send.err" || fail "no delivery receipt shown"
    # the client showed the same fingerprint as the server on first contact
    fp=$(head -n 1 "$T/srv.out")
    fp=${fp##* fingerprint }
    grep -q "first contact with 127.0.0.1:$PORT; pinned its key, fingerprint $fp" "$T/first.err" "$T/send.err" ||
        fail "first-contact fingerprint not shown"
    [ "$(file_mode "$T/cfg/libsim/known_servers")" = 600 ] || fail "known_servers mode"
    # carol never logged in, so she has no end-to-end keys: refused with a clear error
    expect_status 1 sim_as 'alice pw' --timeout 2 send alice carol hi
    grep -q "carol has no end-to-end keys yet" "$T/last.err" || fail "missing prekeys not explained"
    # recv without --count ends at --timeout with status 0
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob
    # a wrong password is refused with status 1
    expect_status 1 sim_as 'not alice pw' --no-session --keys-dir "$T/keys-other" send alice bob hi
    grep -q "login refused" "$T/last.err" || fail "wrong password not explained"
    # nobody listening on a port: status 1 with a clear error
    stop_simd
    expect_status 1 sim_as 'alice pw' --timeout 5 send alice bob hi
    grep -q "cannot connect to 127.0.0.1:$PORT" "$T/last.err" || fail "connection failure not explained"
    ;;

session-token)
    start_simd srv
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob
    sim_as 'bob pw' --timeout 20 recv bob --count 2 >"$T/recv.out" 2>"$T/recv.err" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    sim_as 'alice pw' send alice bob "with password" >/dev/null 2>"$T/send.err" || fail "first send failed"
    STATE="$T/cfg/libsim/sessions"
    [ -f "$STATE" ] || fail "no state file"
    [ "$(file_mode "$STATE")" = 600 ] || fail "state file mode $(file_mode "$STATE")"
    grep -q "^127.0.0.1:$PORT alice [0-9a-f]\{64\} [0-9]\+$" "$STATE" || fail "no token for alice in the state file"
    # the token logs in (the password only opens the local end-to-end state): no new token is issued
    before=$(grep " alice " "$STATE")
    sim_as 'alice pw' send alice bob "with token" >/dev/null 2>"$T/token.err" ||
        fail "token login failed: $(cat "$T/token.err")"
    [ "$(grep " alice " "$STATE")" = "$before" ] || fail "a password login replaced the stored token"
    # without a password the local state cannot be opened, token or not
    (unset SIM_PASSWORD; expect_status 2 setsid -w "$SIM" --server "127.0.0.1:$PORT" send alice bob "no password")
    grep -q "no password" "$T/last.err" || fail "missing password not explained"
    wait_exit "$RECV_PID" 20 || fail "recv did not finish"
    [ "$(cat "$T/recv.out")" = "$(printf 'alice: with password\nalice: with token')" ] ||
        fail "recv printed: $(cat "$T/recv.out")"
    # a token the server does not know: fall back to the password, and store the new token
    old=$(grep " alice " "$STATE")
    sed -i "s/ alice [0-9a-f]\{64\} / alice $(printf '%064d' 0) /" "$STATE"
    expect_status 1 sim_as 'alice pw' --timeout 2 send alice carol hi
    grep -q "no longer valid" "$T/last.err" || fail "stale token not reported"
    grep -q "carol has no end-to-end keys yet" "$T/last.err" || fail "password fallback did not log in"
    new=$(grep " alice " "$STATE")
    [ -n "$new" ] && [ "$new" != "$old" ] || fail "no new token stored after the fallback"
    # a state file others can read is not used
    chmod 644 "$STATE"
    expect_status 1 sim_as 'alice pw' --timeout 2 send alice carol hi
    grep -q "can be read by others" "$T/last.err" || fail "world-readable state file used"
    stop_simd
    ;;

pinning)
    start_simd srv
    fp=$(head -n 1 "$T/srv.out")
    fp=${fp##* fingerprint }
    # pinned mode and no pin: refused
    expect_status 1 sim_as 'bob pw' --trust pinned --timeout 2 recv bob
    grep -q "not trusted" "$T/last.err" || fail "unpinned server accepted with --trust pinned"
    [ -s "$T/cfg/libsim/known_servers" ] && grep -q "127.0.0.1:$PORT" "$T/cfg/libsim/known_servers" &&
        fail "refused key was pinned"
    # a wrong expected fingerprint: refused
    expect_status 1 sim_as 'bob pw' --fingerprint "$(printf '%064d' 0)" --timeout 2 recv bob
    grep -q "does not match --fingerprint" "$T/last.err" || fail "wrong --fingerprint accepted"
    grep -q "pinned" "$T/last.err" && fail "the refusal speaks of a pinned key though nothing was pinned"
    # the right one (any spacing): accepted and pinned, even with --trust pinned
    expect_status 0 sim_as 'bob pw' --trust pinned --fingerprint "${fp// /:}" --timeout 1 recv bob
    grep -q "127.0.0.1:$PORT" "$T/cfg/libsim/known_servers" || fail "key not pinned"
    expect_status 0 sim_as 'bob pw' --trust pinned --timeout 1 recv bob
    # a different key for this server in the pin file: refused as a possible attack
    sed -i "s/^127.0.0.1:$PORT .*/127.0.0.1:$PORT $(printf '%064d' 1)/" "$T/cfg/libsim/known_servers"
    expect_status 1 sim_as 'bob pw' --timeout 2 recv bob
    grep -q "does not match the key pinned in" "$T/last.err" || fail "pin mismatch not refused"
    stop_simd
    ;;

sigterm)
    start_simd srv --log-level info
    sim_as 'bob pw' --timeout 30 recv bob --count 1 >"$T/recv.out" 2>"$T/recv.err" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    for _ in $(seq 1 50); do
        grep -q "authenticated as bob" "$T/srv.err" && break
        sleep 0.1
    done
    grep -q "authenticated as bob" "$T/srv.err" || fail "bob never logged in"
    grep -q 'msg="conn [0-9]* from 127.0.0.1:[0-9]* connected"' "$T/srv.err" || fail "no connect log line"
    # a refused login names the user and the address it came from
    expect_status 1 sim_as 'not bob pw' --no-session --keys-dir "$T/keys-other" --timeout 5 recv bob
    wait_for "$T/srv.err" "user bob closed: "
    grep -q 'msg="conn [0-9]* from 127.0.0.1:[0-9]* user bob closed: wrong username or password' "$T/srv.err" ||
        fail "refused login not logged: $(grep 'user bob closed' "$T/srv.err")"
    stop_simd
    grep -q 'msg="shutting down" signal=SIGTERM' "$T/srv.err" || fail "no shutdown log line"
    grep -q 'msg="conn [0-9]* from 127.0.0.1:[0-9]* user bob disconnected: ' "$T/srv.err" ||
        fail "no disconnect log line"
    # the connected client learns that the server went away
    wait_exit "$RECV_PID" 10 || fail "recv still running after the server stopped"
    [ "$EXIT_STATUS" -eq 1 ] || fail "recv exited with $EXIT_STATUS after the server stopped"
    grep -q "connection closed" "$T/recv.err" || fail "recv did not report the closed connection"
    # SIGINT stops it as well
    start_simd srv
    kill -INT "$SIMD_PID"
    wait_exit "$SIMD_PID" 10 || fail "simd did not stop on SIGINT"
    [ "$EXIT_STATUS" -eq 0 ] || fail "simd exited with $EXIT_STATUS on SIGINT"
    # logs never carry the password
    grep -q "bob pw" "$T/srv.err" && fail "a password reached the log"
    ;;

register)
    start_simd srv --registration explicit
    printf 'alice password\n' >"$T/alice.pw"
    # under explicit registration a login with a new name is refused like a wrong password
    expect_status 1 sim_as 'alice password' --timeout 5 recv alice
    grep -q "login refused" "$T/last.err" || fail "unregistered login not refused"
    expect_status 0 sim_as '' --password-file "$T/alice.pw" register alice
    grep -q "registered alice at 127.0.0.1:$PORT" "$T/last.out" || fail "register did not confirm"
    expect_status 1 sim_as '' --password-file "$T/alice.pw" register alice
    expect_status 0 sim_as 'alice password' --no-session --timeout 1 recv alice
    expect_status 0 "$SIMD" --data-dir "$T/srv" user list
    [ "$(cat "$T/last.out")" = alice ] || fail "user list: $(cat "$T/last.out")"
    stop_simd
    # a closed server refuses registration
    start_simd srv --registration closed
    expect_status 1 sim_as 'carol password' register carol
    grep -q "does not let you create accounts" "$T/last.err" || fail "closed registration not explained"
    stop_simd
    ;;

devices)
    # Linking a second device with sim: the new installation shows a code, the running chat of the first device
    # approves it; then the list, a wrong code, removal.
    start_simd srv
    expect_status 0 sim_as 'alice pw' --timeout 1 recv alice  # registers: device 1
    mkfifo "$T/alice.in"
    sim_as 'alice pw' --timeout 60 --plain chat alice <"$T/alice.in" >"$T/alice.out" 2>&1 &
    ALICE=$!
    PIDS+=("$ALICE")
    exec 3>"$T/alice.in"
    wait_for "$T/alice.out" "authenticated as alice"
    # the phone: its own configuration directory (another installation)
    XDG_CONFIG_HOME="$T/phone" sim_as 'alice pw' --timeout 30 link alice >"$T/phone.out" 2>&1 &
    PHONE=$!
    PIDS+=("$PHONE")
    wait_for "$T/phone.out" "link code"
    wait_for "$T/alice.out" "asks to be linked"
    code=$(sed -n 's/.*link code \([A-Z2-7]\{4\}-[A-Z2-7]\{4\}\).*/\1/p' "$T/phone.out")
    [ -n "$code" ] || fail "no code shown"
    # the fingerprint the phone shows is the one the chat shows
    fp=$(sed -n 's/.*its fingerprint \([0-9a-f ]*\)).*/\1/p' "$T/phone.out")
    grep -qF "fingerprint $fp)" "$T/alice.out" || fail "the chat shows another fingerprint than the phone"
    echo "/approve $code" >&3
    wait_exit "$PHONE" 20 || fail "sim link did not end after the approval"
    [ "$EXIT_STATUS" -eq 0 ] || fail "sim link exited with $EXIT_STATUS"
    grep -q "this installation is device 2 of alice" "$T/phone.out" || fail "the phone is not device 2"
    wait_for "$T/alice.out" "devices of alice are now 1, 2"
    # end to end, bob's message reaches both of alice's devices; one the phone sends shows in the laptop's chat as
    # alice's own
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob  # registers bob, publishes his keys
    sim_as 'bob pw' --timeout 20 send bob alice "to both devices" >"$T/bob.out" 2>&1 || fail "bob's send failed"
    wait_for "$T/alice.out" "[bob] to both devices"
    XDG_CONFIG_HOME="$T/phone" expect_status 0 sim_as 'alice pw' --timeout 10 recv alice --count 1
    grep -qF "bob: to both devices" "$T/last.out" || fail "the phone got: $(cat "$T/last.out")"
    XDG_CONFIG_HOME="$T/phone" expect_status 0 sim_as 'alice pw' --timeout 20 send alice bob "from the phone"
    wait_for "$T/alice.out" "[you -> bob] from the phone"
    # the phone logs in as device 2 from now on; both list two devices
    XDG_CONFIG_HOME="$T/phone" expect_status 0 sim_as 'alice pw' devices alice
    grep -q "^2 (this one)  active" "$T/last.out" || fail "the phone's list: $(cat "$T/last.out")"
    XDG_CONFIG_HOME="$T/phone" expect_status 0 sim_as 'alice pw' devices alice rename 1 laptop
    grep -q "^1  active  laptop" "$T/last.out" || fail "rename: $(cat "$T/last.out")"
    # a used installation cannot link again
    XDG_CONFIG_HOME="$T/phone" expect_status 1 sim_as 'alice pw' link alice
    grep -q "already has an end-to-end state" "$T/last.err" || fail "a used state linked again"
    # a wrong code: nothing is linked, the new installation fails and keeps no state
    XDG_CONFIG_HOME="$T/tablet" sim_as 'alice pw' --timeout 30 link alice >"$T/tablet.out" 2>&1 &
    TABLET=$!
    PIDS+=("$TABLET")
    wait_for "$T/alice.out" "(3, fingerprint"
    echo "/approve AAAA-AAAA" >&3
    wait_for "$T/alice.out" "/approve: "
    wait_exit "$TABLET" 20 || fail "sim link did not end after a wrong code"
    [ "$EXIT_STATUS" -eq 1 ] || fail "sim link exited with $EXIT_STATUS after a wrong code"
    [ -z "$(ls -A "$T/tablet/libsim/keys" 2>/dev/null)" ] || fail "a failed link left a state behind"
    echo "/quit" >&3
    exec 3>&-
    wait_exit "$ALICE" 10 || fail "alice's chat did not quit"
    # removal (the chat is gone: the state file is free): the phone can no longer log in
    expect_status 0 sim_as 'alice pw' devices alice remove 2
    grep -q "device 2 removed" "$T/last.out" || fail "remove: $(cat "$T/last.out")"
    XDG_CONFIG_HOME="$T/phone" expect_status 1 sim_as 'alice pw' devices alice
    grep -q "device" "$T/last.err" || fail "the removed device's login: $(cat "$T/last.err")"
    ;;

chat)
    # the seed's server-assigned mode (the e2e case covers end-to-end conversations)
    start_simd srv --conversation-mode server-assigned
    mkfifo "$T/alice.in" "$T/bob.in"
    # keys rotate every second: alice (--verbose) shows it, bob (quiet by default) does not
    sim_as 'alice pw' --timeout 30 --rotation-seconds 1 --verbose chat alice bob <"$T/alice.in" >"$T/alice.out" 2>&1 &
    ALICE=$!
    PIDS+=("$ALICE")
    exec 3>"$T/alice.in"
    sim_as 'bob pw' --timeout 30 --rotation-seconds 1 chat bob <"$T/bob.in" >"$T/bob.out" 2>&1 &
    BOB=$!
    PIDS+=("$BOB")
    exec 4>"$T/bob.in"
    wait_for "$T/alice.out" "* conversation with bob keyed"
    wait_for "$T/alice.out" "server-assigned key: the server can read this conversation"
    wait_for "$T/bob.out" "* conversation with alice keyed"
    echo "/r too early" >&4
    wait_for "$T/bob.out" "! nobody has written to you yet"
    echo "hello bob" >&3
    wait_for "$T/bob.out" "[alice] hello bob"
    # bob talks to nobody yet: he is told how to answer, and /r does
    wait_for "$T/bob.out" "* /r TEXT answers alice (you are talking to nobody)"
    echo "/r hi alice" >&4
    wait_for "$T/alice.out" "[bob] hi alice"
    # presence: alice named bob at her login, bob wrote to alice: contacts; hiding shows bob offline to alice
    echo "/presence hide" >&4
    wait_for "$T/bob.out" "* your presence is hidden: your contacts see you offline"
    wait_for "$T/alice.out" "* bob is offline"
    ONLINE=$(grep -cF -- "* bob is online" "$T/alice.out")
    [ "$ONLINE" -eq 1 ] || fail "bob being online was told $ONLINE times (ack_init 2 and presence are one fact)"
    echo "/presence show" >&4
    wait_for "$T/bob.out" "* your presence is shown to your contacts"
    wait_for_count "$T/alice.out" "* bob is online" $((ONLINE + 1))
    grep -q "/r TEXT answers bob" "$T/alice.out" && fail "a hint for the peer one is already talking to"
    echo "/to alice" >&4
    echo "//slash text" >&4
    wait_for "$T/alice.out" "[bob] /slash text"
    # /history and /search read bob's local inbox (messages received)
    echo "/history 5" >&4
    wait_for "$T/bob.out" "* the last 1 message(s) from alice in the inbox:"
    # each line with the sender's time (HH:MM today)
    for _ in $(seq 1 50); do
        grep -q "^  [0-2][0-9]:[0-5][0-9] \[alice\] hello bob$" "$T/bob.out" && break
        sleep 0.1
    done
    grep -q "^  [0-2][0-9]:[0-5][0-9] \[alice\] hello bob$" "$T/bob.out" ||
        fail "/history shows no time: $(grep "hello bob" "$T/bob.out")"
    echo "/search HELLO B" >&4
    wait_for "$T/bob.out" "* 1 message(s) in the inbox contain 'HELLO B':"
    echo "/search nothing-like-this" >&4
    wait_for "$T/bob.out" "* no message in the inbox contains 'nothing-like-this'"
    echo "/history x" >&4
    wait_for "$T/bob.out" "! /history: expected a number of messages"
    # a message sent more than --rotation-seconds after the first one rotates the key on both sides
    sleep 1.2
    echo "after a rotation" >&3
    wait_for "$T/bob.out" "[alice] after a rotation"
    wait_for "$T/alice.out" "* key with bob rotated"
    echo "/who" >&3
    wait_for "$T/alice.out" "* bob (AES-256-GCM) <- current"
    grep -q "rotated" "$T/bob.out" && fail "a key rotation shown without --verbose"
    echo "/nonsense" >&3
    wait_for "$T/alice.out" "! unknown command /nonsense"
    echo "/leave" >&4
    wait_for "$T/alice.out" "* bob left"
    # writing again opens a new conversation by itself (the message waits in the outbox for its key)
    echo "are you there?" >&3
    wait_for "$T/bob.out" "[alice] are you there?"
    echo "/to nobody" >&3
    echo "/leave" >&3
    echo "anyone?" >&3
    wait_for "$T/alice.out" "! no current peer"
    echo "/quit" >&3
    exec 3>&-
    exec 4>&-  # end of input quits too
    wait_exit "$ALICE" 10 || fail "alice's chat did not quit"
    [ "$EXIT_STATUS" -eq 0 ] || fail "alice's chat exited with $EXIT_STATUS"
    wait_exit "$BOB" 10 || fail "bob's chat did not end at end of input"
    [ "$EXIT_STATUS" -eq 0 ] || fail "bob's chat exited with $EXIT_STATUS"
    stop_simd
    ;;

reconnect | reconnect-server-assigned)
    # simd is killed and restarted on the same port and data: the chats reconnect by themselves and go on, in
    # either conversation mode (the outbox keeps what is typed meanwhile in both)
    MODE=(--conversation-mode e2e)
    KEYED="end-to-end conversation with"
    if [ "$CASE" = reconnect-server-assigned ]; then
        MODE=(--conversation-mode server-assigned)
        KEYED="server-assigned key"
    fi
    start_simd srv "${MODE[@]}"
    R=(--reconnect-delay 0.2 --reconnect-max 1 --timeout 10)
    mkfifo "$T/alice.in" "$T/bob.in" "$T/carol.in"
    sim_as 'bob pw' "${R[@]}" chat bob <"$T/bob.in" >"$T/bob.out" 2>&1 &
    BOB=$!
    PIDS+=("$BOB")
    exec 4>"$T/bob.in"
    wait_for "$T/bob.out" "* authenticated as bob"
    sim_as 'alice pw' "${R[@]}" chat alice bob <"$T/alice.in" >"$T/alice.out" 2>&1 &
    ALICE=$!
    PIDS+=("$ALICE")
    exec 3>"$T/alice.in"
    # carol is a script: with --no-reconnect a lost connection still ends it with status 1
    sim_as 'carol pw' --no-reconnect chat carol <"$T/carol.in" >"$T/carol.out" 2>&1 &
    CAROL=$!
    PIDS+=("$CAROL")
    exec 5>"$T/carol.in"
    wait_for "$T/carol.out" "* authenticated as carol"
    wait_for "$T/alice.out" "$KEYED"
    echo "before the restart" >&3
    wait_for "$T/bob.out" "[alice] before the restart"
    echo "/r hello alice" >&4
    wait_for "$T/alice.out" "[bob] hello alice"
    kill -KILL "$SIMD_PID"
    wait_exit "$SIMD_PID" 10 2>/dev/null || fail "simd survived SIGKILL"  # no "Killed" notice
    wait_for "$T/alice.out" "* connection lost: "
    wait_for "$T/bob.out" "* connection lost: "
    grep -q "reconnecting in [0-9.]* s" "$T/alice.out" || fail "no reconnection delay shown"
    wait_exit "$CAROL" 10 || fail "carol's chat (--no-reconnect) went on without its server"
    [ "$EXIT_STATUS" -eq 1 ] || fail "carol's chat exited with $EXIT_STATUS after the server went away"
    grep -q "! connection closed" "$T/carol.out" || fail "carol's chat did not say the connection closed"
    # typed while the server is down: queued, not dropped
    echo "while you were down" >&3
    wait_for "$T/alice.out" "* not connected: queued in the outbox"
    wait_for "$T/alice.out" "* reconnecting failed: cannot connect to 127.0.0.1:$PORT"
    start_simd srv --listen "127.0.0.1:$PORT" "${MODE[@]}"
    wait_for "$T/alice.out" "* reconnected"
    wait_for "$T/bob.out" "* reconnected"
    wait_for "$T/bob.out" "[alice] while you were down"
    # the conversations are opened again: alice's peer, and bob's (alice wrote to him; he never typed /open)
    wait_for_count "$T/bob.out" "$KEYED" 2
    wait_for_count "$T/alice.out" "$KEYED" 2
    echo "after the restart" >&3
    wait_for "$T/bob.out" "[alice] after the restart"
    echo "me too" >&4
    wait_for "$T/alice.out" "[bob] me too"
    [ "$(grep -c "\[alice\] before the restart" "$T/bob.out")" -eq 1 ] || fail "a message was shown twice"
    # the server goes for good: the chats keep trying until the user quits
    kill -KILL "$SIMD_PID"
    wait_exit "$SIMD_PID" 10 2>/dev/null || fail "simd survived SIGKILL"  # no "Killed" notice
    wait_for_count "$T/alice.out" "* reconnecting failed" 4
    kill -0 "$BOB" 2>/dev/null || fail "bob's chat ended without its server"
    echo "/quit" >&3
    exec 3>&-
    exec 5>&-
    wait_exit "$ALICE" 10 || fail "alice's chat did not quit"
    [ "$EXIT_STATUS" -eq 0 ] || fail "alice's chat exited with $EXIT_STATUS"
    # another server (another key) on that port: a refusal that retrying cannot fix ends bob's chat
    start_simd other --listen "127.0.0.1:$PORT"
    wait_exit "$BOB" 10 || fail "bob's chat went on against a server with another key"
    [ "$EXIT_STATUS" -eq 1 ] || fail "bob's chat exited with $EXIT_STATUS on a changed server key"
    grep -q "sim: error: cannot reconnect: the key of 127.0.0.1:$PORT does not match the key pinned" "$T/bob.out" ||
        fail "the changed server key was not explained"
    exec 4>&-
    stop_simd
    ;;

e2e)
    start_simd srv
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob
    # bob is offline: the message is stored durably, then delivered when he logs in
    expect_status 0 sim_as 'alice pw' --timeout 10 send alice bob "while you were away"
    grep -q "message to bob stored" "$T/last.err" || fail "no 'stored' receipt for an offline recipient"
    expect_status 0 sim_as 'bob pw' --timeout 10 recv bob --count 1
    [ "$(cat "$T/last.out")" = "alice: while you were away" ] || fail "stored message not delivered: $(cat "$T/last.out")"
    grep -q "end-to-end conversation with alice" "$T/last.err" || fail "bob did not see an end-to-end conversation"
    # both sides compute the same safety number; verify marks it
    expect_status 0 sim_as 'alice pw' safety alice bob
    a=$(sed -n 's/^safety number with bob: \([0-9 ]*\) (not verified)$/\1/p' "$T/last.out")
    expect_status 0 sim_as 'bob pw' safety bob alice
    b=$(sed -n 's/^safety number with alice: \([0-9 ]*\) (not verified)$/\1/p' "$T/last.out")
    [ -n "$a" ] && [ "$a" = "$b" ] || fail "safety numbers differ or missing: '$a' vs '$b'"
    expect_status 0 sim_as 'alice pw' verify alice bob
    grep -q "(verified)" "$T/last.out" || fail "verify did not mark the key"
    # the state file is sealed: neither names nor keys are readable, and a wrong password opens nothing
    keys=$(ls "$T/cfg/libsim/keys/"*alice.db)
    [ "$(file_mode "$keys")" = 600 ] || fail "keys file mode $(file_mode "$keys")"
    grep -q "bob" "$keys" && fail "a contact name is readable in the keys file"
    expect_status 1 sim_as 'wrong pw' --no-session safety alice bob
    grep -q "wrong password for the end-to-end state" "$T/last.err" || fail "wrong state password not refused"
    # bob loses his keys: a new identity. alice is told loudly and sends nothing until she accepts it
    rm -f "$T/cfg/libsim/keys/"*bob.db*
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob
    expect_status 1 sim_as 'alice pw' --timeout 5 send alice bob "to the new key?"
    grep -q "identity key of bob CHANGED" "$T/last.err" || fail "changed identity not announced"
    expect_status 0 sim_as 'alice pw' safety alice bob
    grep -q "CHANGED; not accepted yet" "$T/last.out" || fail "pending change not shown"
    expect_status 0 sim_as 'alice pw' accept alice bob
    grep -q "(not verified)" "$T/last.out" || fail "an accepted new key still counts as verified"
    expect_status 0 sim_as 'alice pw' --timeout 10 send alice bob "to the new key"
    expect_status 0 sim_as 'bob pw' --timeout 10 recv bob --count 1
    [ "$(cat "$T/last.out")" = "alice: to the new key" ] || fail "message after accept: $(cat "$T/last.out")"
    stop_simd
    ;;

backup)
    start_simd srv --conversation-mode server-assigned
    expect_status 0 sim_as 'bob pw' --timeout 1 recv bob
    # while the server runs and another account is being made
    printf 'carol password\n' >"$T/carol.pw"
    "$SIMD" --data-dir "$T/srv" --bcrypt-cost 4 user add carol --password-file "$T/carol.pw" >"$T/add.out" 2>&1 &
    ADD_PID=$!
    PIDS+=("$ADD_PID")
    expect_status 0 "$SIMD" --data-dir "$T/srv" backup "$T/copy.db"
    grep -q "backed up $T/srv/simd.db to $T/copy.db" "$T/last.out" || fail "backup did not confirm"
    wait_exit "$ADD_PID" 10 && [ "$EXIT_STATUS" -eq 0 ] || fail "user add during the backup failed"
    [ "$(file_mode "$T/copy.db")" = 600 ] || fail "backup mode $(file_mode "$T/copy.db")"
    [ -e "$T/copy.db.partial" ] && fail "backup left its partial file"
    expect_status 1 "$SIMD" --data-dir "$T/srv" backup "$T/srv/simd.db"
    grep -q "is the database itself" "$T/last.err" || fail "backup over the database not refused"
    expect_status 1 "$SIMD" --db mariadb://u:p@127.0.0.1:9/db backup "$T/m.db"
    grep -q "mariadb-dump --single-transaction" "$T/last.err" || fail "MariaDB backup: $(cat "$T/last.err")"
    expect_status 2 "$SIMD" --data-dir "$T/srv" backup
    stop_simd
    # restored = the copy and the two key files: a server on them knows the account made before the backup
    start_simd restored --db "sqlite:$T/copy.db" --key "$T/srv/server.key" --master-key-file "$T/srv/master.key" \
        --registration closed --conversation-mode server-assigned
    expect_status 0 sim_as 'bob pw' --no-session --timeout 1 recv bob
    expect_status 1 sim_as 'mallory pw' --no-session --timeout 3 recv mallory
    stop_simd
    ;;

docs)
    : "${TOOLS_DOC:?set TOOLS_DOC to docs/tools.md}"
    [ -f "$TOOLS_DOC" ] || fail "missing $TOOLS_DOC"
    for prog in "$SIMD" "$SIM"; do
        for opt in $("$prog" --help | grep -o -- '--[a-z][a-z-]*' | sort -u); do
            grep -q -- "\`$opt" "$TOOLS_DOC" || fail "$(basename "$prog") $opt is not documented in docs/tools.md"
        done
    done
    # the usage lines of --help and of the document agree, both ways
    usage() { sed -n 's/^.*\(\(simd\|sim\) \[OPTIONS\]\( [][a-zA-Z.]\+\)*\).*$/\1/p' | sort -u; }
    help_usage=$( ("$SIMD" --help; "$SIM" --help) | usage)
    doc_usage=$(usage <"$TOOLS_DOC")
    [ "$help_usage" = "$doc_usage" ] ||
        fail "usage lines differ between --help and docs/tools.md: $(diff <(echo "$help_usage") <(echo "$doc_usage"))"
    # and the reverse: the document names no option that the programs do not have
    all_help=$("$SIMD" --help; "$SIM" --help)
    for opt in $(grep -o -- '`--[a-z][a-z-]*' "$TOOLS_DOC" | tr -d '`' | sort -u); do
        grep -q -- "$opt" <<<"$all_help" || fail "docs/tools.md documents $opt, which neither program has"
    done
    ;;

metrics)
    # The admin endpoint: off by default, Prometheus text on GET /metrics, counters that follow what clients do,
    # 404 / 405, and 'simd status' through the same option or configuration key.
    expect_status 1 "$SIMD" --data-dir "$T/none" status
    grep -q -- "--metrics-address" "$T/last.err" || fail "simd status without an address does not say how to enable it"
    for bad in "99999" "host:1" "127.0.0.1:x" ":5"; do
        expect_status 2 "$SIMD" --data-dir "$T/never" --metrics-address "$bad"
    done
    start_simd srv --metrics-address 127.0.0.1:0 --log-level info
    admin_port srv
    http "GET /metrics HTTP/1.0"
    head -n 1 "$T/http.out" | grep -q "^HTTP/1.0 200 " || fail "GET /metrics: $(head -n 1 "$T/http.out")"
    grep -qi "^Content-Type: text/plain; version=0.0.4" "$T/http.out" || fail "/metrics content type"
    grep -q "^# TYPE simd_logins_total counter$" "$T/http.out" || fail "no TYPE line for the logins counter"
    grep -q "^# TYPE simd_login_latency_seconds histogram$" "$T/http.out" || fail "no TYPE line for a histogram"
    grep -q '^simd_login_latency_seconds_bucket{le="+Inf"} 0$' "$T/http.out" || fail "no +Inf bucket"
    grep -q "^# HELP simd_connections " "$T/http.out" || fail "no HELP line for the connections gauge"
    grep -q '^simd_info{version="[0-9.]*"} 1$' "$T/http.out" || fail "no simd_info"
    [ "$(metric 'simd_logins_total{result="ok"}')" = 0 ] || fail "logins before any client"
    [ "$(connections)" = 0 ] || fail "connections before any client"
    http "GET /nothing HTTP/1.0"
    head -n 1 "$T/http.out" | grep -q "^HTTP/1.0 404 " || fail "GET /nothing: $(head -n 1 "$T/http.out")"
    http "POST /metrics HTTP/1.0"
    head -n 1 "$T/http.out" | grep -q "^HTTP/1.0 405 " || fail "POST /metrics: $(head -n 1 "$T/http.out")"
    grep -qi "^Allow: GET" "$T/http.out" || fail "405 without Allow"

    # bob waits for a message; 'simd status' (address from a configuration file) shows him online
    sim_as 'bob pw' --timeout 20 recv bob --count 1 >"$T/recv.out" 2>"$T/recv.err" &
    RECV_PID=$!
    PIDS+=("$RECV_PID")
    printf 'metrics-address = %s\n' "$MPORT" >"$T/status.conf"
    for _ in $(seq 1 100); do
        "$SIMD" -c "$T/status.conf" status >"$T/status.out" 2>"$T/status.err" || fail "simd status failed"
        grep -q "^  bob$" "$T/status.out" && break
        sleep 0.1
    done
    grep -q "^online users: 1$" "$T/status.out" || fail "simd status does not list bob: $(cat "$T/status.out")"
    expect_metric simd_online_users 1
    expect_metric 'simd_connections{state="authenticated"}' 1
    [ "$(connections)" = 1 ] || fail "connections while bob waits: $(connections)"
    sim_as 'alice pw' send alice bob hello >"$T/send.out" 2>"$T/send.err" || fail "sim send failed"
    wait_exit "$RECV_PID" 20 || fail "recv did not finish"
    [ "$EXIT_STATUS" -eq 0 ] || fail "recv exited with $EXIT_STATUS"
    expect_metric 'simd_connections{state="authenticated"}' 0
    [ "$(metric simd_messages_routed_total)" = 1 ] || fail "messages routed: $(metric simd_messages_routed_total)"
    # a message to an online user goes through the mailbox too: stored, drained, deleted by the ack
    [ "$(metric simd_store_committed_messages_total)" = 1 ] || fail "a message to an online user was not stored"
    expect_metric simd_store_messages 0
    # bob is offline now: the next message stays in his mailbox until his next login
    sim_as 'alice pw' send alice bob again >>"$T/send.out" 2>>"$T/send.err" || fail "second send failed"
    expect_metric simd_store_committed_messages_total 2
    [ "$(metric simd_store_messages)" = 1 ] || fail "stored messages: $(metric simd_store_messages)"
    [ "$(metric simd_store_commit_latency_seconds_count)" = 2 ] || fail "commit latency not observed"
    [ "$(metric simd_store_commits_total)" -ge 1 ] || fail "no store commit counted"
    [ "$(metric simd_store_bytes)" -gt 0 ] || fail "the stored message's bytes are not counted"
    [ "$(metric simd_messages_routed_total)" = 1 ] || fail "a stored message counted as routed before delivery"
    expect_status 0 sim_as 'bob pw' --timeout 20 recv bob --count 1
    [ "$(cat "$T/last.out")" = "alice: again" ] || fail "the stored message: $(cat "$T/last.out")"
    # a wrong password (from a client without bob's sealed state, which would refuse it before connecting)
    XDG_CONFIG_HOME="$T/cfg2" expect_status 1 sim_as 'wrong pw' --timeout 5 recv bob
    grep -q "login refused" "$T/last.err" || fail "wrong password: $(cat "$T/last.err")"
    expect_metric simd_store_bytes 0
    expect_metric 'simd_connections{state="unauthenticated"}' 0
    [ "$(connections)" = 0 ] || fail "connections after every client left: $(connections)"
    [ "$(metric simd_store_messages)" = 0 ] || fail "stored messages after the drain: $(metric simd_store_messages)"
    [ "$(metric simd_online_users)" = 0 ] || fail "users online after every client left"
    for result in ok:4 failed:1 throttled:0; do
        got=$(metric "simd_logins_total{result=\"${result%%:*}\"}")
        [ "$got" = "${result#*:}" ] || fail "logins ${result%%:*}: '$got', expected ${result#*:}"
    done
    [ "$(metric simd_login_latency_seconds_count)" = 5 ] || fail "login latencies: $(metric simd_login_latency_seconds_count)"
    [ "$(metric 'simd_login_latency_seconds_bucket{le="+Inf"}')" = 5 ] || fail "login latency +Inf bucket"
    [ "$(metric simd_handshake_latency_seconds_count)" -ge 5 ] || fail "handshake latencies not observed"
    [ "$(metric simd_messages_routed_total)" = 2 ] || fail "messages routed: $(metric simd_messages_routed_total)"
    [ "$(metric simd_messages_delivered_total)" = 2 ] || fail "messages delivered: $(metric simd_messages_delivered_total)"
    grep -q "^simd_messages_refused_total" "$T/http.out" && fail "messages refused: $(grep refused_total "$T/http.out")"
    expect_status 0 "$SIMD" status --metrics-address "127.0.0.1:$MPORT"
    grep -q "^online users: 0$" "$T/last.out" || fail "simd status after the clients left: $(cat "$T/last.out")"
    stop_simd
    expect_status 1 "$SIMD" -c "$T/status.conf" status
    grep -q "no simd answers at http://127.0.0.1:$MPORT/status" "$T/last.err" ||
        fail "simd status without a server: $(cat "$T/last.err")"
    ;;

bench-metrics)
    # /metrics scraped while sim-bench loads the server: the counters follow what sim-bench reports, the
    # histograms fill, every connection is gone afterwards, and sim-bench reads the same figures itself.
    : "${SIM_BENCH:?set SIM_BENCH to the sim-bench program}"
    start_simd srv --metrics-address 127.0.0.1:0 --log-level info --max-connections-per-address 0
    admin_port srv
    "$SIM_BENCH" offline --server "127.0.0.1:$PORT" --metrics-address "127.0.0.1:$MPORT" --pairs 2 --count 500 \
        --conn-rate 500 --timeout 60 --json "$T/bench.json" >"$T/bench.out" 2>"$T/bench.err" </dev/null &
    BENCH_PID=$!
    PIDS+=("$BENCH_PID")
    busiest=0
    scrapes=0
    while kill -0 "$BENCH_PID" 2>/dev/null; do
        http "GET /metrics HTTP/1.0"
        head -n 1 "$T/http.out" | grep -q "^HTTP/1.0 200 " || fail "GET /metrics during the run"
        scrapes=$((scrapes + 1))
        [ "$(connections)" -gt "$busiest" ] && busiest=$(connections)
        sleep 0.1
    done
    wait_exit "$BENCH_PID" 5 || fail "sim-bench did not end"
    [ "$EXIT_STATUS" -eq 0 ] || fail "sim-bench exited with $EXIT_STATUS"
    [ "$scrapes" -ge 5 ] || fail "only $scrapes scrapes during the run"
    [ "$busiest" -ge 2 ] || fail "no connections seen during the run (at most $busiest)"
    # figure KEY: a number from sim-bench's JSON report
    figure() { sed -n "s/^  \"$1\": \([0-9.]*\),\{0,1\}$/\1/p" "$T/bench.json" | cut -d. -f1; }
    stored=$(figure stored)
    drained=$(figure drained)
    [ "${stored:-0}" -ge 1000 ] || fail "sim-bench stored '$stored' messages, expected 1000"
    [ "${drained:-0}" -ge 1000 ] || fail "sim-bench drained '$drained' messages"
    expect_metric 'simd_connections{state="authenticated"}' 0
    expect_metric simd_store_messages 0
    [ "$(connections)" = 0 ] || fail "connections after the run: $(connections)"
    committed=$(metric simd_store_committed_messages_total)
    [ "$committed" -ge "$stored" ] || fail "committed $committed < stored $stored"
    [ "$(metric simd_messages_routed_total)" -ge "$drained" ] || fail "routed < drained"
    [ "$(metric simd_messages_delivered_total)" -ge "$drained" ] || fail "delivered < drained"
    [ "$(metric simd_store_commit_latency_seconds_count)" = "$committed" ] ||
        fail "commit latencies $(metric simd_store_commit_latency_seconds_count) != committed $committed"
    [ "$(metric simd_login_latency_seconds_count)" -gt 0 ] || fail "no login latency"
    [ "$(metric simd_handshake_latency_seconds_count)" -gt 0 ] || fail "no handshake latency"
    # sim-bench read the same counters from /metrics
    [ "$(figure server_committed)" = "$committed" ] ||
        fail "sim-bench says $(figure server_committed) committed, /metrics $committed"
    [ "$(figure store_commits)" -ge 1 ] || fail "sim-bench reports no store transactions"
    grep -q "server /metrics: messages per transaction  *[0-9]" "$T/bench.out" || fail "no messages per transaction"
    stop_simd
    ;;

packaging)
    # packaging/: the sample configuration is accepted by simd, the service is ready only once simd listens
    # (sd_notify), and systemd accepts the unit.
    : "${PACKAGING:?set PACKAGING to the packaging folder}"
    conf="$PACKAGING/simd.conf.example"
    help=$("$SIMD" --help)
    keys=$(sed -n 's/^#\{0,1\} *\([a-z][a-z-]*\) = .*/\1/p' "$conf")
    [ -n "$keys" ] || fail "no 'key = value' lines in $conf"
    for key in $keys; do  # also the commented-out ones, which show defaults
        grep -q -- "--$key " <<<"$help" || fail "$conf: simd has no option --$key"
    done
    if command -v socat >/dev/null; then
        socat -u UNIX-RECV:"$T/notify.sock" OPEN:"$T/notify.log",creat,append 2>"$T/socat.err" &
        PIDS+=("$!")
        for _ in $(seq 1 50); do [ -S "$T/notify.sock" ] && break; sleep 0.1; done
        [ -S "$T/notify.sock" ] || fail "socat did not bind $T/notify.sock"
        export NOTIFY_SOCKET="$T/notify.sock"
    else
        echo "socat not found: the sd_notify datagrams are not checked here (tools-service-notify checks them)"
    fi
    # the sample's listen address and data directory are overridden to stay on loopback and in $T
    start_simd srv -c "$conf"
    unset NOTIFY_SOCKET
    grep -q "cannot notify" "$T/srv.err" && fail "simd could not notify"
    if [ -S "$T/notify.sock" ]; then
        for _ in $(seq 1 50); do grep -q "READY=1" "$T/notify.log" 2>/dev/null && break; sleep 0.1; done
        grep -q "READY=1" "$T/notify.log" || fail "no READY=1 on NOTIFY_SOCKET"
        grep -q "STATUS=listening on 127.0.0.1:$PORT" "$T/notify.log" || fail "no STATUS with the address"
        grep -q "STOPPING=1" "$T/notify.log" && fail "STOPPING=1 before SIGTERM"
    fi
    stop_simd
    if [ -S "$T/notify.sock" ]; then
        for _ in $(seq 1 20); do grep -q "STOPPING=1" "$T/notify.log" && break; sleep 0.1; done
        grep -q "STOPPING=1" "$T/notify.log" || fail "no STOPPING=1 on NOTIFY_SOCKET"
    fi
    if command -v systemd-analyze >/dev/null; then
        # verify checks that ExecStart's program exists: point it at the simd under test
        sed "s|^ExecStart=/usr/bin/simd |ExecStart=$SIMD |" "$PACKAGING/systemd/simd.service" >"$T/simd.service"
        grep -q "^ExecStart=$SIMD --config /etc/simd/simd.conf$" "$T/simd.service" || fail "unexpected ExecStart"
        # it warns (status 0) about unknown keys and bad values: any output is a failure
        systemd-analyze verify "$T/simd.service" >"$T/verify.out" 2>&1 || fail "systemd-analyze verify failed"
        [ -s "$T/verify.out" ] && fail "systemd-analyze verify has complaints"
    else
        echo "systemd-analyze not found: the unit file is not verified"
    fi
    ;;

*)
    echo "unknown case '$CASE'" >&2
    exit 2
    ;;
esac
exit 0
