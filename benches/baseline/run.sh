#!/usr/bin/env bash
# Runs the Python baseline service on 127.0.0.1:PORT.
#
#   benches/baseline/run.sh PORT [WORKERS]
#
# WORKERS defaults to $WORKERS or 2 (one per core of the benchmark machine). Environment:
#   BASELINE_FAULT_RATE  share of request ids on which the primary tier crashes (default 0.2)
#   BASELINE_LOG_LEVEL   level of the fallback log (default ERROR: per-fallback warnings off)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 PORT [WORKERS]" >&2
    exit 2
fi
port="$1"
workers="${2:-${WORKERS:-2}}"

python="$("$here/setup.sh" | tail -n 1)"

exec "$python" -m uvicorn app:app \
    --app-dir "$here" \
    --host 127.0.0.1 \
    --port "$port" \
    --workers "$workers" \
    --loop uvloop \
    --http httptools \
    --no-access-log \
    --log-level warning
