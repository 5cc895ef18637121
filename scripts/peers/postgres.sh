# Peer: Debian's PostgreSQL (15). A private server for the tests: a fresh
# cluster (initdb) in "$PHOENIX_PEERS_DIR/pg-data", listening on a free
# loopback port only (and a socket in "$PHOENIX_PEERS_DIR/pg-run"), trust
# authentication for the role `phoenix` (nothing but this machine can
# reach it), stopped when the test script exits. Its database is created
# with an ICU linguistic collation (en-US) where the server supports it, so
# the tests see the collation production databases usually have.
#
# Exports PHOENIX_TEST_PG_URL=postgres://phoenix@127.0.0.1:PORT/phoenix_test.
# Tests that need it are #[ignore]d in plain `cargo test`; each one uses
# its own schema, so they share the server.
#
# Sourced by scripts/test (which provides apt_install, free_port,
# wait_port, on_exit and set -euo pipefail). Idempotent; reads no input.

apt_install postgresql

pg_bin=""
for dir in /usr/lib/postgresql/*/bin; do
  [ -x "$dir/initdb" ] && pg_bin="$dir"
done
[ -n "$pg_bin" ] || { echo "postgres: no initdb under /usr/lib/postgresql/*/bin" >&2; exit 1; }

pg_data="$PHOENIX_PEERS_DIR/pg-data"
pg_run="$PHOENIX_PEERS_DIR/pg-run"

# PostgreSQL refuses to run as root: run it as the `postgres` account the
# package creates, which must own its directories.
if [ "$(id -u)" -eq 0 ]; then
  pg_os_user=postgres
  pg_as() { runuser -u postgres -- "$@"; }
  # The account must be able to reach the peers directory.
  if ! runuser -u postgres -- test -x "$PHOENIX_PEERS_DIR"; then
    pg_parent="$(mktemp -d /tmp/phoenix-pg.XXXXXX)"
    chmod 755 "$pg_parent"
    pg_data="$pg_parent/pg-data"
    pg_run="$pg_parent/pg-run"
    on_exit "rm -rf '$pg_parent'"
  fi
else
  pg_os_user="$(id -un)"
  pg_as() { "$@"; }
fi

# A server left running by an interrupted earlier run is stopped first;
# the cluster is always created afresh, so every run starts clean.
if [ -f "$pg_data/postmaster.pid" ]; then
  pg_as "$pg_bin/pg_ctl" -D "$pg_data" stop -m immediate >/dev/null 2>&1 || true
fi
rm -rf "$pg_data" "$pg_run"
mkdir -p "$pg_data" "$pg_run"
chmod 700 "$pg_data"
if [ "$(id -u)" -eq 0 ]; then
  chown "$pg_os_user" "$pg_data" "$pg_run"
fi

pg_as "$pg_bin/initdb" -D "$pg_data" -U phoenix --auth=trust -E UTF8 --locale=C.UTF-8 \
  >"$pg_run/initdb.log" 2>&1 \
  || { tail -n 20 "$pg_run/initdb.log" >&2; exit 1; }

pg_port="$(free_port)"
# The tests open many short-lived orchestrator processes, each with its
# own small pool, so the server allows more connections than its default.
pg_as "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_run/server.log" -w -t 60 \
  -o "-k $pg_run -c listen_addresses=127.0.0.1 -p $pg_port -c max_connections=300" start \
  >/dev/null \
  || { tail -n 30 "$pg_run/server.log" >&2; exit 1; }
if [ "$(id -u)" -eq 0 ]; then
  on_exit "runuser -u postgres -- '$pg_bin/pg_ctl' -D '$pg_data' stop -m fast >/dev/null 2>&1"
else
  on_exit "'$pg_bin/pg_ctl' -D '$pg_data' stop -m fast >/dev/null 2>&1"
fi
wait_port "$pg_port" 30

pg_psql() { "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U phoenix -d postgres "$@"; }
if ! pg_psql -c "CREATE DATABASE phoenix_test TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'" 2>"$pg_run/createdb.err"; then
  echo "postgres: no ICU collation ($(head -n 1 "$pg_run/createdb.err")); using the default" >&2
  pg_psql -c "CREATE DATABASE phoenix_test"
fi

PHOENIX_TEST_PG_URL="postgres://phoenix@127.0.0.1:$pg_port/phoenix_test"
export PHOENIX_TEST_PG_URL
echo "postgres: $PHOENIX_TEST_PG_URL ($("$pg_bin/postgres" --version), data $pg_data, log $pg_run/server.log)" >&2
