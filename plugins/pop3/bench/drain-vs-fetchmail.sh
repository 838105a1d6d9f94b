#!/usr/bin/env bash
# Time to drain N small mails (default 10,000) from the test Dovecot: the pop3 source (into an
# in-process TestHost; the host's durable queue is not in the loop yet) vs fetchmail (fetchall,
# no keep, bsmtp to a file), with a bare pipelining client as the ceiling. Every run starts
# from a freshly refilled INBOX and must leave it empty with every mail delivered (the bare
# client only empties it); rounds interleave the clients; prints a table of medians.
#
#   scripts/dovecot.sh start /tmp/ab-dovecot && eval "$(scripts/dovecot.sh env /tmp/ab-dovecot)"
#   plugins/pop3/bench/drain-vs-fetchmail.sh            # N=10000 RUNS=5 by default
#
# Needs: fetchmail, python3, doveadm (dovecot-core); run as root or as the Dovecot user.
set -eu
N=${N:-10000}; RUNS=${RUNS:-5}
C=${ALERTBRIDGE_TEST_DOVECOT_CONF:?start Dovecot with scripts/dovecot.sh and eval its env output}
PLAIN=${ALERTBRIDGE_TEST_POP3_ADDR:?}; TLS=${ALERTBRIDGE_TEST_POP3S_ADDR:?}; CA=${ALERTBRIDGE_TEST_POP3_CA:?}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../../.." && pwd)
WORK=${BENCH_DIR:-$(mktemp -d /tmp/pop3-bench.XXXXXX)}; mkdir -p "$WORK"; chmod 755 "$WORK"  # doveadm runs as the mail user

(cd "$ROOT" && cargo build --release -q -p alertbridge-pop3 --example drain)
# HOST=1 adds the pop3 source inside the real alertbridge, durable queue included.
[ "${HOST:-0}" = 1 ] && (cd "$ROOT" && scripts/testbed --release >/dev/null)
DRAIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/drain

if [ ! -d "$WORK/tmpl$N/Maildir/new" ]; then
    OWNER=; [ "$(id -u)" = 0 ] && OWNER="--owner nobody"
    python3 "$HERE/gen-maildir.py" "$WORK/tmpl$N/Maildir" "$N" $OWNER >/dev/null
fi
# doveadm import reads (and indexes) the template as the mail user.
[ "$(id -u)" = 0 ] && chown -R nobody:nogroup "$WORK/tmpl$N"

messages() { doveadm -c "$C" mailbox status -u bench messages INBOX | sed 's/.*messages=//'; }
refill() {
    doveadm -c "$C" expunge -u bench mailbox INBOX all
    doveadm -c "$C" import -u bench "maildir:$WORK/tmpl$N/Maildir" "" all
    [ "$(messages)" = "$N" ] || { echo "refill: INBOX does not hold $N messages" >&2; exit 1; }
}

fetchmail_rc() { # $1 = plain|pop3s
    local host=${PLAIN%:*} port=${PLAIN##*:} tls="sslproto ''"
    if [ "$1" = pop3s ]; then port=${TLS##*:}; tls="ssl sslproto TLS1.2+ sslcertck sslcertfile $CA sslcommonname localhost"; fi
    cat > "$WORK/fm-$1.rc" <<RC
set no bouncemail
set no syslog
set no spambounce
poll $host service $port protocol pop3 auth password timeout 60
  user "bench" there with password "benchpass" is "$(id -un)" here
  $tls
  fetchall
  no keep
  no rewrite
  bsmtp $WORK/fetchmail.bsmtp
RC
    chmod 600 "$WORK/fm-$1.rc"
}

now() { date +%s.%N; }

# once NAME COMMAND...: one timed run on a refilled INBOX; checks that the INBOX is empty after
# it and (fetchmail) that the bsmtp file holds every mail.
once() {
    local name=$1; shift
    refill; rm -f "$WORK/fetchmail.bsmtp"
    local t0 t1; t0=$(now); "$@" >/dev/null 2>"$WORK/$name.err" || { cat "$WORK/$name.err" >&2; exit 1; }; t1=$(now)
    [ "$(messages)" = 0 ] || { echo "$name: INBOX not empty after the run" >&2; exit 1; }
    if [ -e "$WORK/fetchmail.bsmtp" ]; then
        local got; got=$(grep -c '^MAIL FROM:' "$WORK/fetchmail.bsmtp")
        [ "$got" = "$N" ] || { echo "$name: bsmtp file holds $got of $N mails" >&2; exit 1; }
    fi
    awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.6f\n", a - b }' >> "$WORK/$name.times"
}

stats() { sort -n "$WORK/$1.times" | awk -v n="$N" '{ t[NR] = $1 } END {
    m = (NR % 2) ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
    printf "%.3f %.3f %.3f %.0f\n", m, t[1], t[NR], n / m }'; }

fetchmail_rc plain; fetchmail_rc pop3s
FM="fetchmail --pidfile $WORK/fm.pid --idfile $WORK/fm.ids -s"
VARIANTS=${VARIANTS:-"pop3-plain fetchmail-plain pop3-pop3s fetchmail-pop3s pop3-plain-1session bare-pipelined-plain"}
[ "${HOST:-0}" = 1 ] && VARIANTS="$VARIANTS host-plain host-plain-1session host-plain-1000"
for v in $VARIANTS; do : > "$WORK/$v.times"; done
# Rounds interleave the clients, so a noisy neighbour on the machine hits all of them alike.
# VARIANTS (env) picks clients from the list above.
run() { # name command...: one timed run, if the variant was asked for
    case " $VARIANTS " in *" $1 "*) once "$@" ;; esac
}
for round in $(seq "$RUNS"); do
    echo "round $round/$RUNS" >&2
    run pop3-plain "$DRAIN" "$PLAIN" none bench benchpass "$N"
    run fetchmail-plain $FM -f "$WORK/fm-plain.rc"
    run pop3-pop3s "$DRAIN" "$TLS" implicit bench benchpass "$N" "$CA"
    run fetchmail-pop3s $FM -f "$WORK/fm-pop3s.rc"
    DRAIN_EXTRA_CONFIG="max_messages_per_session = $N" run pop3-plain-1session "$DRAIN" "$PLAIN" none bench benchpass "$N"
    run bare-pipelined-plain python3 "$HERE/pop3-drain.py" bench benchpass "${PLAIN##*:}" 64
    run host-plain "$HERE/drain-host.sh" "$PLAIN" "$N"
    run host-plain-1session "$HERE/drain-host.sh" "$PLAIN" "$N" "max_messages_per_session = $N"
    run host-plain-1000 "$HERE/drain-host.sh" "$PLAIN" "$N" "max_messages_per_session = 1000"
done

echo
echo "Draining $N mails from Dovecot on loopback, $RUNS runs each (wall seconds; medians)."
echo "pop3 source -> in-process TestHost (no durable queue yet); fetchmail -> bsmtp file."
echo "pop3-*, host-plain: the default max_messages_per_session (5000: 2 sessions for 10k); -1session: one; -1000: ten."
echo "bare-pipelined: a 28-line python client, RETR+DELE in batches of 64, no parsing, no delivery."
echo "host-*: the pop3 source in the release alertbridge, each mail durably queued before its DELE (incl. host start)."
printf '%-34s %9s %9s %9s %10s\n' client median min max "mails/s"
for v in $VARIANTS; do
    [ -s "$WORK/$v.times" ] || continue
    read -r m lo hi rate <<< "$(stats $v)"
    printf '%-34s %9s %9s %9s %10s\n' "$v" "$m" "$lo" "$hi" "$rate"
done
for v in host-plain host-plain-1session host-plain-1000; do
    [ -s "$WORK/$v.times" ] || continue
    a=$(stats "$v" | cut -d' ' -f1); b=$(stats fetchmail-plain | cut -d' ' -f1)
    awk -v t="$v" -v a="$a" -v b="$b" 'BEGIN { printf "speed-up over fetchmail (%s): %.1fx\n", t, b / a }'
done
for t in plain pop3s; do
    [ -s "$WORK/pop3-$t.times" ] && [ -s "$WORK/fetchmail-$t.times" ] || continue
    a=$(stats "pop3-$t" | cut -d' ' -f1); b=$(stats "fetchmail-$t" | cut -d' ' -f1)
    awk -v t="$t" -v a="$a" -v b="$b" 'BEGIN { printf "speed-up over fetchmail (%s): %.1fx\n", t, b / a }'
done
