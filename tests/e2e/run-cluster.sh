#!/usr/bin/env bash
# Run a test program against a throwaway NATS server and a throwaway database server (the cluster cases of
# test_e2e): both started through tests/auth/run-with-db-server.sh, which installs the packages when missing and
# fails (never skips) when a server cannot start. The program gets SIM_TEST_NATS_URL (SIM_NATS_SERVERS=3: three
# servers in one NATS cluster, comma-separated), SIM_TEST_NATS_CRASH (a command that kills the first of them with
# SIGKILL), and the database as run-with-db-server.sh names it (SIM_TEST_BACKEND, SIM_TEST_DB_URL,
# SIM_TEST_DB_RESTART, ...).
#   run-cluster.sh DBKIND PROGRAM [program args...]     (DBKIND: postgresql | mariadb)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$here/../..
run=$root/tests/auth/run-with-db-server.sh
if [ -z "${SIM_CLUSTER_NATS_STARTED:-}" ]; then
  # First the NATS server; this script runs again inside, as its program.
  SIM_CLUSTER_NATS_STARTED=1 exec "$run" nats "$0" "$root/scripts/nats-test-server.sh" "$@"
fi
export SIM_TEST_NATS_URL=$SIM_TEST_DB_URL
# The NATS layer's restart hook names its state folder: the same command with `crash` kills its first server (-9).
export SIM_TEST_NATS_CRASH=${SIM_TEST_DB_RESTART/ restart / crash }
unset SIM_CLUSTER_NATS_STARTED SIM_TEST_DB_SOCKET_URL SIM_TEST_DB_RESTART
dbkind=$1
shift
case "$dbkind" in
  postgresql) script=$root/scripts/postgres-test-server.sh ;;
  mariadb) script=$root/scripts/mariadb-test-server.sh ;;
  *) echo "run-cluster.sh: unknown database kind '$dbkind'" >&2; exit 2 ;;
esac
program=$1
shift
exec "$run" "$dbkind" "$program" "$script" "$@"
