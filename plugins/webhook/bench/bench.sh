#!/usr/bin/env bash
# Moved: the webhook against Alertmanager is scripts/bench-webhook (same arguments and knobs).
exec "$(cd "$(dirname "$0")/../../.." && pwd)/scripts/bench-webhook" "$@"
