#!/usr/bin/env bash
# Ingestion benchmark: single-alert JSON POSTs over keep-alive connections (wrk), against
#   1. our webhook (examples/bench-server.rs: the source with an in-process TestHost — the
#      host's durable queue is NOT in the loop yet; every 202 still waits for the host's receipt),
#   2. Prometheus Alertmanager's own POST /api/v2/alerts (keeps alerts in memory only), the same
#      alert re-posted (DISTINCT=1) and 1000 distinct alerts (DISTINCT=1000).
# Prints one line per run and a table of medians.
#
#   plugins/webhook/bench/bench.sh [DURATION_SECS=10] [RUNS=3]
#   env: THREADS (wrk threads, 2), CONNS (connections, 16)
# Needs wrk and prometheus-alertmanager (apt-get install wrk prometheus-alertmanager).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dur=${1:-10}
runs=${2:-3}
threads=${THREADS:-2}
conns=${CONNS:-16}
hook_addr=127.0.0.1:19182
am_port=19095
work=$(mktemp -d)
server_pid=

cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  ALERTBRIDGE_TEST_ALERTMANAGER_PORT=$am_port "$root/scripts/alertmanager.sh" stop "$work/am" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in wrk prometheus-alertmanager; do
  command -v $tool >/dev/null || { echo "$tool is missing: apt-get install wrk prometheus-alertmanager" >&2; exit 1; }
done

# wrk output -> "req/s p50 p99 non2xx errors"
summarise() {
  awk '
    /Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = $2 }
    /^ +99%/ { p99 = $2 }
    /Non-2xx or 3xx responses:/ { bad = $5 }
    /Socket errors:/ { err = $0; sub(/.*Socket errors: */, "", err); gsub(/ /, "", err) }
    END { printf "%s %s %s %s %s\n", rps, p50, p99, (bad == "" ? 0 : bad), (err == "" ? "none" : err) }'
}

declare -A results
run_once() { # label url script [env...]
  local label=$1 url=$2 script=$3
  shift 3
  local line rps p50 p99 bad err
  line=$(env "$@" wrk -t"$threads" -c"$conns" -d"${dur}s" --latency -s "$script" "$url" | summarise)
  read -r rps p50 p99 bad err <<<"$line"
  printf '%-28s req/s=%s p50=%s p99=%s non-2xx=%s socket-errors=%s\n' "$label" "$rps" "$p50" "$p99" "$bad" "$err" >&2
  results[$label]+="$line"$'\n'
}

echo "Building the bench server (release)..." >&2
(cd "$root" && cargo build --release -q -p alertbridge-webhook --example bench-server)
target=${CARGO_TARGET_DIR:-$root/target}
"$target/release/examples/bench-server" "$hook_addr" bench-token >"$work/server.out" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do grep -q '^listening' "$work/server.out" && break; sleep 0.1; done
grep -q '^listening' "$work/server.out" || { cat "$work/server.out" >&2; exit 1; }
# Alertmanager's receiver points at a closed port: notifications fail fast and cost little.
ALERTBRIDGE_TEST_ALERTMANAGER_PORT=$am_port "$root/scripts/alertmanager.sh" start "$work/am" http://127.0.0.1:9/closed

# Interleaved, so that noise from other work on the machine hits every target alike.
labels=("webhook (TestHost)" "alertmanager same alert" "alertmanager 1000 distinct")
for i in $(seq 1 "$runs"); do
  echo "run $i of $runs" >&2
  run_once "${labels[0]}" "http://$hook_addr" "$here/webhook-post.lua" TOKEN=bench-token
  run_once "${labels[1]}" "http://127.0.0.1:$am_port" "$here/alertmanager-post.lua" DISTINCT=1
  run_once "${labels[2]}" "http://127.0.0.1:$am_port" "$here/alertmanager-post.lua" DISTINCT=1000
done
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
echo "bench server: $(grep accepted "$work/server.out")" >&2

echo
echo "wrk -t$threads -c$conns -d${dur}s, keep-alive, one alert per POST; median of $runs runs (by req/s);"
echo "$(nproc) cores shared by wrk and the server; webhook = TestHost, no durable queue in the loop yet"
printf '| %-28s | %10s | %9s | %9s | %7s |\n' target "req/s" p50 p99 non-2xx
printf '|%s|%s|%s|%s|%s|\n' ------------------------------ ------------ ----------- ----------- ---------
declare -A median_rps
for label in "${labels[@]}"; do
  read -r rps p50 p99 bad _ <<<"$(printf '%s' "${results[$label]}" | sort -n -k1,1 | sed -n "$(( (runs + 1) / 2 ))p")"
  median_rps[$label]=$rps
  printf '| %-28s | %10s | %9s | %9s | %7s |\n' "$label" "$rps" "$p50" "$p99" "$bad"
done
awk -v a="${median_rps[${labels[0]}]}" -v b="${median_rps[${labels[1]}]}" -v c="${median_rps[${labels[2]}]}" \
  'BEGIN { printf "webhook / alertmanager: %.2fx (same alert), %.2fx (1000 distinct)\n", a / b, a / c }'
