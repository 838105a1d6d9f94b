#!/usr/bin/env bash
# Ingestion benchmark: single-alert JSON POSTs over keep-alive connections (wrk), against
#   1. our webhook inside the real release `alertbridge` (test sink, one recipient, data_dir on
#      disk: every 202 comes after the host's durable group commit, fsync included); a fresh
#      data_dir per run, so every run starts from the same state;
#   2. Prometheus Alertmanager's own POST /api/v2/alerts (keeps alerts in memory only), the same
#      alert re-posted (DISTINCT=1) and 1000 distinct alerts (DISTINCT=1000);
#   3. with TESTHOST=1 also the webhook alone (examples/bench-server.rs: in-process TestHost, no
#      queue): the HTTP layer's ceiling.
# Runs are interleaved so noise from other work on the machine hits every target alike. Prints
# one line per run and a table of medians (by req/s), with the server's CPU time per request
# (user + system, all its threads): the cost that decides the rate once the cores are busy.
#
#   plugins/webhook/bench/bench.sh [DURATION_SECS=10] [RUNS=3]
#   env: THREADS (wrk threads, 2), CONNS (connections, 16), TESTHOST (0), SKIP_BUILD (0)
# Needs wrk and prometheus-alertmanager (apt-get install wrk prometheus-alertmanager); builds
# the workspace in release mode (`cargo build --release --workspace`) unless SKIP_BUILD=1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dur=${1:-10}
runs=${2:-3}
threads=${THREADS:-2}
conns=${CONNS:-16}
hook_addr=127.0.0.1:19182
admin_addr=127.0.0.1:19183
testhost_addr=127.0.0.1:19184
am_port=19095
token=bench-token
work=$(mktemp -d "${TMPDIR:-/tmp}/webhook-bench.XXXXXX")
target=${CARGO_TARGET_DIR:-$root/target}
host_pid=
server_pid=

stop_pid() { # pid
  [[ -n $1 ]] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
cleanup() {
  stop_pid "$host_pid"
  stop_pid "$server_pid"
  ALERTBRIDGE_TEST_ALERTMANAGER_PORT=$am_port "$root/scripts/alertmanager.sh" stop "$work/am" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in wrk prometheus-alertmanager curl; do
  command -v $tool >/dev/null || { echo "$tool is missing: apt-get install wrk prometheus-alertmanager curl" >&2; exit 1; }
done

wait_for() { # url what
  for _ in $(seq 1 200); do curl -fsS "$1" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "$2 did not answer on $1" >&2
  return 1
}

# The real host, on a fresh data_dir.
start_host() {
  local run=$work/host-$1
  mkdir -p "$run"
  printf '%s\n' "$token" >"$run/tokens"
  cat >"$run/alertbridge.toml" <<TOML
[host]
data_dir = "$run/data"
plugin_dir = "$target/testbed-release"
admin_listen = "$admin_addr"
max_queue_depth = 1000000

[delivery]
per_recipient_per_minute = 0
presence_cache_ms = 60000
sink_concurrency = 1024

[[source]]
name = "hook"
plugin = "webhook"
[source.config]
listen = "$hook_addr"
tokens_file = "$run/tokens"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "$run/delivered.jsonl"

[groups]
ops = ["sip:ops@contoso.com"]

[[route]]
name = "all"
groups = ["ops"]
sinks = ["sink"]
TOML
  RUST_LOG=warn "$target/release/alertbridge" run --config "$run/alertbridge.toml" 2>"$run/host.log" &
  host_pid=$!
  wait_for "http://$admin_addr/healthz" "alertbridge" || { cat "$run/host.log" >&2; exit 1; }
  wait_for "http://$hook_addr/healthz" "the webhook in alertbridge" || { cat "$run/host.log" >&2; exit 1; }
}

# host metric -> value (0 if absent)
metric() {
  curl -fsS "http://$admin_addr/metrics" | awk -v m="$1" 'index($0, m) == 1 { v = $NF } END { print (v == "" ? 0 : v) }'
}

# wrk output -> "req/s p50 p99 non2xx errors requests"
summarise() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    / requests in / { total = $1 }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    /Socket errors:/ { err = $0; sub(/.*Socket errors: */, "", err); gsub(/ /, "", err) }
    END { printf "%s %s %s %s %s %s\n", rps, p50, p99, (bad == "" ? 0 : bad), (err == "" ? "none" : err), total }'
}

# CPU clock ticks (user + system) a process has used so far.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

declare -A results
run_once() { # label pid url script [env...]
  local label=$1 pid=$2 url=$3 script=$4
  shift 4
  local line rps p50 p99 bad err total t0 t1 cpu
  t0=$(ticks "$pid")
  line=$(env "$@" wrk -t"$threads" -c"$conns" -d"${dur}s" --latency -s "$script" "$url" | summarise)
  t1=$(ticks "$pid")
  read -r rps p50 p99 bad err total <<<"$line"
  cpu=$(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n="$total" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
  printf '%-28s req/s=%s p50=%s p99=%s non-2xx=%s socket-errors=%s requests=%s cpu-us/req=%s\n' "$label" "$rps" "$p50" "$p99" "$bad" "$err" "$total" "$cpu" >&2
  results[$label]+="$line $cpu"$'\n'
}

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
  echo "Building the workspace and the test plugins (release)..." >&2
  (cd "$root" && scripts/testbed --release >/dev/null)
fi
# scripts/testbed links the host, the real plugins and the test plugins into one folder.
for f in alertbridge libalertbridge_webhook.so libalertbridge_test_sink.so; do
  [[ -e $target/testbed-release/$f ]] || { echo "$target/testbed-release/$f is missing: scripts/testbed --release" >&2; exit 1; }
done
labels=("webhook in alertbridge" "alertmanager same alert" "alertmanager 1000 distinct")
if [[ ${TESTHOST:-0} == 1 ]]; then
  (cd "$root" && cargo build --release -q -p alertbridge-webhook --example bench-server)
  "$target/release/examples/bench-server" "$testhost_addr" "$token" >"$work/server.out" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 100); do grep -q '^listening' "$work/server.out" && break; sleep 0.1; done
  grep -q '^listening' "$work/server.out" || { cat "$work/server.out" >&2; exit 1; }
  labels+=("webhook alone (TestHost)")
fi
# Alertmanager's receiver points at a closed port: notifications fail fast and cost little.
ALERTBRIDGE_TEST_ALERTMANAGER_PORT=$am_port "$root/scripts/alertmanager.sh" start "$work/am" http://127.0.0.1:9/closed

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for i in $(seq 1 "$runs"); do
  echo "run $i of $runs (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  start_host "$i"
  run_once "${labels[0]}" "$host_pid" "http://$hook_addr" "$here/webhook-post.lua" TOKEN=$token
  accepted=$(metric 'alertbridge_alerts_accepted_total{source="hook"}')
  echo "  host: ${accepted} alerts accepted (metric), queue depth at the end $(curl -fsS "http://$admin_addr/healthz" | sed 's/.*"queue_depth":\([0-9-]*\).*/\1/')" >&2
  stop_pid "$host_pid"; host_pid=
  rm -rf "$work/host-$i/data"
  am_pid=$(cat "$work/am/am.pid")
  run_once "${labels[1]}" "$am_pid" "http://127.0.0.1:$am_port" "$here/alertmanager-post.lua" DISTINCT=1
  run_once "${labels[2]}" "$am_pid" "http://127.0.0.1:$am_port" "$here/alertmanager-post.lua" DISTINCT=1000
  if [[ -n $server_pid ]]; then
    run_once "${labels[3]}" "$server_pid" "http://$testhost_addr" "$here/webhook-post.lua" TOKEN=$token
  fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

echo
echo "wrk -t$threads -c$conns -d${dur}s, keep-alive, one alert per POST; median of $runs interleaved runs (by req/s);"
echo "$(nproc) cores shared by wrk, the server and whatever else runs (load average $(cut -d' ' -f1-3 /proc/loadavg))"
printf '| %-28s | %10s | %9s | %9s | %7s | %11s |\n' target "req/s" p50 p99 non-2xx "CPU µs/req"
printf '|%s|%s|%s|%s|%s|%s|\n' ------------------------------ ------------ ----------- ----------- --------- -------------
declare -A median_rps
for label in "${labels[@]}"; do
  read -r rps p50 p99 bad _ _ cpu <<<"$(printf '%s' "${results[$label]}" | sort -n -k1,1 | sed -n "$(( (runs + 1) / 2 ))p")"
  median_rps[$label]=$rps
  printf '| %-28s | %10s | %9s | %9s | %7s | %11s |\n' "$label" "$rps" "$p50" "$p99" "$bad" "$cpu"
done
awk -v a="${median_rps[${labels[0]}]}" -v b="${median_rps[${labels[1]}]}" -v c="${median_rps[${labels[2]}]}" \
  'BEGIN { printf "alertbridge webhook / alertmanager: %.2fx (same alert), %.2fx (1000 distinct)\n", a / b, a / c }'
