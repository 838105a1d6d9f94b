#!/usr/bin/env bash
# One timed client for drain-vs-fetchmail.sh: the pop3 source inside the real release
# `alertbridge`, every mail durably queued (redb, fsync per group commit) before its DELE, one
# test-sink recipient. Starts the host and returns once N alerts were accepted and the INBOX is
# empty (the session's QUIT committed the DELEs); the host then stops in the background, untimed.
#
#   drain-host.sh HOST:PORT N [EXTRA_CONFIG_LINE]
set -eu
ADDR=$1; N=$2; EXTRA=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd)
# scripts/testbed --release: the host with the real plugins and the test sink beside it.
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/testbed-release/alertbridge
W=$(mktemp -d /tmp/pop3-host.XXXXXX)
ADMIN=127.0.0.1:${ADMIN_PORT:-19186}
# A previous run's host may still be stopping.
while (exec 3<>"/dev/tcp/${ADMIN%:*}/${ADMIN##*:}") 2>/dev/null; do sleep 0.05; done
cat > "$W/bridge.toml" <<CONF
[host]
data_dir = "$W/data"
admin_listen = "$ADMIN"
max_queue_depth = 1000000
history_max_alerts = 1000000

[delivery]
per_recipient_per_minute = 0

[[source]]
name = "mail"
plugin = "pop3"
[source.config]
server = "$ADDR"
tls = "none"
username = "bench"
password = "benchpass"
state_dir = "$W/state"
poll_interval_ms = 100
$EXTRA

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "$W/delivered.jsonl"

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
CONF
RUST_LOG=${RUST_LOG:-info} "$BIN" run --config "$W/bridge.toml" 2>"$W/host.log" &
[ -n "${KEEP_LOG:-}" ] && ln -sf "$W/host.log" "$KEEP_LOG"
PID=$!
# The wait below polls every 10 ms with bash builtins only (no curl, no sleep process): a fork
# per poll cost the drain it measures a fifth of the machine.
exec {tick}<> <(:)
ACCEPTED=
poll_accepted() { # sets ACCEPTED: the host's accepted counter for "mail", read over /dev/tcp
    local line m
    ACCEPTED=
    exec {m}<>"/dev/tcp/${ADMIN%:*}/${ADMIN##*:}" || return 0
    printf 'GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n' >&$m
    while IFS= read -r -u $m line; do
        [[ $line == 'alertbridge_alerts_accepted_total{source="mail"} '* ]] && ACCEPTED=${line##* }
    done
    exec {m}>&-
    ACCEPTED=${ACCEPTED%$'\r'}
}
inbox() { doveadm -c "$ALERTBRIDGE_TEST_DOVECOT_CONF" mailbox status -u bench messages INBOX | sed 's/.*messages=//'; }
until poll_accepted 2>/dev/null; [ "$ACCEPTED" = "$N" ] && [ "$(inbox)" = 0 ]; do
    kill -0 $PID 2>/dev/null || { cat "$W/host.log" >&2; exit 1; }
    read -r -t 0.01 -u $tick || true
done
# Stop it (SIGTERM) and clean up after the timed part; the next run waits for the admin port.
( kill -TERM $PID; while kill -0 $PID 2>/dev/null; do sleep 0.05; done; [ -n "${KEEP_LOG:-}" ] || rm -rf "$W" ) >/dev/null 2>&1 &
