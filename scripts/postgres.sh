#!/usr/bin/env bash
# A throw-away PostgreSQL on 127.0.0.1 for the `postgres` queue backend's tests and benchmarks.
# Installs nothing: needs Debian's `postgresql` (scripts/test installs it).
#
#   scripts/postgres.sh start DIR     initdb DIR/data (first time), start, wait, make role + db
#   scripts/postgres.sh stop DIR      stop it (fast shutdown: open sessions are cut; waits)
#   scripts/postgres.sh restart DIR   stop, then start (the data stays)
#   scripts/postgres.sh kill DIR      SIGKILL the postmaster and its backends (a crash; the
#                                     next start recovers from the WAL)
#   scripts/postgres.sh env DIR       print the `export` lines the tests read
#   scripts/postgres.sh --dir DIR CMD the same, directory first (used by ALERTBRIDGE_TEST_POSTGRES_CTL)
#
# Port: ALERTBRIDGE_TEST_POSTGRES_PORT (default 15432), on 127.0.0.1 only, and a Unix socket
# in DIR/run. Run as root, the server runs as the unprivileged `postgres` user (PostgreSQL
# refuses root): DIR is made reachable for it and DIR/data, DIR/run, DIR/log are its own. Run
# as an ordinary user, it runs as that user.
# The tests' role `alertbridge` (password `alertbridge`, CREATEDB: each test makes a database
# of its own) owns the database `alertbridge`; clients authenticate with SCRAM over TCP.
# Durability is PostgreSQL's default (fsync, synchronous_commit on) unless
# ALERTBRIDGE_TEST_POSTGRES_FSYNC=off (a scratch server on a busy CI machine): then nothing waits
# for the disk, but a commit still answers only after its WAL is written, so a killed server
# loses nothing committed; only an OS crash would.
# Binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin, else initdb on PATH.
set -eu

if [ "${1:-}" = "--dir" ]; then DIR=${2:?usage: $0 --dir DIR start|stop|restart|kill|env}; CMD=${3:?}
else CMD=${1:?usage: $0 start|stop|restart|kill|env DIR}; DIR=${2:?usage: $0 $CMD DIR}; fi
mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
DATA=$DIR/data; RUN=$DIR/run; LOG=$DIR/log/postgres.log
PORT=${ALERTBRIDGE_TEST_POSTGRES_PORT:-15432}
FSYNC=${ALERTBRIDGE_TEST_POSTGRES_FSYNC:-on}
ROLE=alertbridge; PASSWORD=alertbridge; DB=alertbridge
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

bindir() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then echo "$newest"; return; fi
    if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return; fi
    echo "PostgreSQL is not installed (no initdb): apt-get install postgresql" >&2
    exit 1
}

# Runs a command as the server's user.
if [ "$(id -u)" = 0 ]; then PGUSER_OS=postgres; as_server() { runuser -u postgres -- "$@"; }
else PGUSER_OS=$(id -un); as_server() { "$@"; }; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
running() { [ -s "$DATA/postmaster.pid" ] && kill -0 "$(head -n 1 "$DATA/postmaster.pid")" 2>/dev/null; }
# psql as the bootstrap superuser over the socket (trusted: only the server's user reaches it).
psql_admin() { as_server "$(bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U "$PGUSER_OS" -d postgres "$@"; }

init() {
    local B; B=$(bindir)
    mkdir -p "$DATA" "$RUN" "$DIR/log"
    if [ "$(id -u)" = 0 ]; then
        # The server must reach DIR (mktemp makes folders 0700) and own what it writes.
        # Search permission only (o+x: pass through, not list) on the folders above that lack it.
        chmod a+rx "$DIR"
        local up=$DIR
        while up=$(dirname "$up"); [ "$up" != / ]; do
            if ! runuser -u postgres -- test -x "$up"; then
                chmod o+x "$up"
                echo "scripts/postgres.sh: $up: o+x so the postgres user can reach $DIR" >&2
            fi
        done
        chown postgres:postgres "$DATA" "$RUN" "$DIR/log"
    fi
    chmod 700 "$DATA"
    [ -s "$DATA/PG_VERSION" ] && return 0
    local nosync=(); [ "$FSYNC" = off ] && nosync=(--no-sync)
    as_server "$B/initdb" -D "$DATA" -U "$PGUSER_OS" --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C.UTF-8 "${nosync[@]}" >"$DIR/log/initdb.log" 2>&1 || {
        echo "initdb failed; see $DIR/log/initdb.log:" >&2; cat "$DIR/log/initdb.log" >&2; return 1
    }
    cat >>"$DATA/postgresql.conf" <<CONF

# scripts/postgres.sh: a scratch server for alertbridge's tests, loopback only.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
max_connections = 300
password_encryption = 'scram-sha-256'
timezone = 'UTC'
log_timezone = 'UTC'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
CONF
    # Only TCP on loopback with a password, and the server's own user over the socket.
    cat >"$DATA/pg_hba.conf" <<HBA
local all $PGUSER_OS trust
host all all 127.0.0.1/32 scram-sha-256
HBA
}

start() {
    if running; then echo "postgres already running (pid $(head -n 1 "$DATA/postmaster.pid"))"; return 0; fi
    if port_open "$PORT"; then
        echo "127.0.0.1:$PORT is already in use (another PostgreSQL from another DIR?); stop it or set ALERTBRIDGE_TEST_POSTGRES_PORT" >&2
        return 1
    fi
    init
    local B; B=$(bindir)
    # -c overrides what the data folder holds, so a restart on another port or fsync works.
    if ! as_server "$B/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
        -o "-c port=$PORT -c fsync=$FSYNC -c full_page_writes=$FSYNC" \
        start >/dev/null; then
        echo "postgres did not start; see $LOG:" >&2; tail -n 20 "$LOG" >&2; return 1
    fi
    for _ in $(seq 100); do port_open "$PORT" && break; sleep 0.1; done
    psql_admin <<SQL
SELECT 'CREATE ROLE $ROLE LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE PASSWORD '$PASSWORD';
SELECT 'CREATE DATABASE $DB OWNER $ROLE' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$DB') \gexec
SQL
    echo "postgres up on 127.0.0.1:$PORT (fsync $FSYNC)"
}

stop() {
    running || return 0
    as_server "$(bindir)/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    for _ in $(seq 100); do port_open "$PORT" || return 0; sleep 0.1; done
    echo "postgres did not close 127.0.0.1:$PORT within 10 s" >&2; return 1
}

crash() {
    running || return 0
    local pid; pid=$(head -n 1 "$DATA/postmaster.pid")
    # The postmaster and every backend it forked (its children), all at once.
    kill -KILL "$pid" $(pgrep -P "$pid" || true) 2>/dev/null || true
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null && ! port_open "$PORT"; then return 0; fi
        sleep 0.1
    done
    echo "postgres did not die within 10 s" >&2; return 1
}

case $CMD in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    kill) crash ;;
    env)
        echo "export ALERTBRIDGE_TEST_POSTGRES_URL=postgres://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
        echo "export ALERTBRIDGE_TEST_POSTGRES_CTL=\"$SELF --dir $DIR\""
        ;;
    *) echo "usage: $0 start|stop|restart|kill|env DIR" >&2; exit 2 ;;
esac
