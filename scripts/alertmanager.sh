#!/usr/bin/env bash
# Runs a real Prometheus Alertmanager on loopback whose webhook receiver is alertbridge's
# `webhook` source, for the integration test plugins/webhook/tests/alertmanager.rs.
#
#   scripts/alertmanager.sh start DIR [WEBHOOK_URL]   write DIR/alertmanager.yml, start, wait until ready
#   scripts/alertmanager.sh env DIR                   print the exports the tests read
#   scripts/alertmanager.sh stop DIR                  stop it (by the PID in DIR/am.pid)
#
# WEBHOOK_URL defaults to http://127.0.0.1:19181/api/v1/alertmanager. Alertmanager sends
# `Authorization: Bearer <token>` with the token from $ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN
# (default `alertbridge-am-test-token`), written to DIR/webhook.token. It listens on
# 127.0.0.1:$ALERTBRIDGE_TEST_ALERTMANAGER_PORT (default 19093), clustering off, with
# group_wait 1s and group_interval 2s so notifications come quickly. `env` prints:
#   ALERTBRIDGE_TEST_ALERTMANAGER_URL      http://127.0.0.1:19093
#   ALERTBRIDGE_TEST_ALERTMANAGER_WEBHOOK  the address the test's webhook must listen on
#   ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN    the bearer token Alertmanager sends
# If prometheus-alertmanager is missing and we are root, it is installed with apt-get.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z $cmd || -z $dir ]]; then
  echo "usage: $0 start|stop|env DIR [WEBHOOK_URL]" >&2
  exit 2
fi
port=${ALERTBRIDGE_TEST_ALERTMANAGER_PORT:-19093}
token=${ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN:-alertbridge-am-test-token}

install() {
  command -v prometheus-alertmanager >/dev/null && return
  if [[ $(id -u) -ne 0 ]]; then
    echo "prometheus-alertmanager is not installed: apt-get install prometheus-alertmanager" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >/dev/null
}

running() {
  [[ -f $dir/am.pid ]] && kill -0 "$(cat "$dir/am.pid")" 2>/dev/null
}

start() {
  local url=${1:-http://127.0.0.1:19181/api/v1/alertmanager}
  install
  mkdir -p "$dir/data"
  dir=$(cd "$dir" && pwd)
  if running; then
    echo "Alertmanager already running (pid $(cat "$dir/am.pid"))" >&2
    exit 1
  fi
  printf '%s\n' "$token" >"$dir/webhook.token"
  cat >"$dir/alertmanager.yml" <<YAML
global:
  resolve_timeout: 5m
route:
  receiver: alertbridge
  group_by: ['alertname', 'instance']
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: alertbridge
    webhook_configs:
      - url: '$url'
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            type: Bearer
            credentials_file: '$dir/webhook.token'
YAML
  amtool check-config "$dir/alertmanager.yml" >/dev/null
  prometheus-alertmanager --config.file="$dir/alertmanager.yml" --storage.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" --cluster.listen-address= >"$dir/am.log" 2>&1 &
  echo $! >"$dir/am.pid"
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
      local hostport=${url#*://}
      hostport=${hostport%%/*}
      {
        echo "export ALERTBRIDGE_TEST_ALERTMANAGER_URL=http://127.0.0.1:$port"
        echo "export ALERTBRIDGE_TEST_ALERTMANAGER_WEBHOOK=$hostport"
        echo "export ALERTBRIDGE_TEST_ALERTMANAGER_TOKEN=$token"
      } >"$dir/env"
      echo "Alertmanager ready on 127.0.0.1:$port (pid $(cat "$dir/am.pid")), webhook $url" >&2
      return
    fi
    if ! running; then break; fi
    sleep 0.1
  done
  echo "Alertmanager did not become ready; its log:" >&2
  cat "$dir/am.log" >&2
  stop
  exit 1
}

stop() {
  if running; then
    local pid
    pid=$(cat "$dir/am.pid")
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$dir/am.pid" "$dir/env"
}

case $cmd in
  start) start "${3:-}" ;;
  stop) stop ;;
  env)
    if ! running || [[ ! -f $dir/env ]]; then
      echo "Alertmanager is not running: $0 start $dir" >&2
      exit 1
    fi
    cat "$dir/env"
    ;;
  *)
    echo "usage: $0 start|stop|env DIR [WEBHOOK_URL]" >&2
    exit 2
    ;;
esac
