#!/usr/bin/env bash
# Runs the Python baseline service on 127.0.0.1:PORT.
#
#   benches/baseline/run.sh PORT [WORKERS]
#
# WORKERS defaults to $WORKERS or 2. Environment (see app.py and tiers.py):
#   BASELINE_ISOLATION   thread (default: tiers in-process, each call on a thread pool with a
#                        timeout) | process (each tier in supervised, restartable processes)
#   BASELINE_FAULT       exception (default) | hang | spin | memory-bomb: what the primary does
#   BASELINE_FAULT_RATE  share of request ids on which the primary faults (default 0.2)
#   BASELINE_MEMORY_MB   address-space limit of every process (ulimit -v), default 1024, so a
#                        memory bomb ends in a MemoryError (or a dead worker, which uvicorn
#                        restarts) instead of taking the machine down; 0 for none
#   BASELINE_EVENTS      file where workers log their starts and tier-process restarts
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

memory_mb="${BASELINE_MEMORY_MB:-1024}"
if [[ "$memory_mb" != 0 ]]; then
    ulimit -v $((memory_mb * 1024))
fi
# glibc reserves 64 MiB of address space per malloc arena (up to 8 per core); with threads
# that alone would hit the address-space limit, so keep two.
export MALLOC_ARENA_MAX=2
# The forkserver of BASELINE_ISOLATION=process imports tiers.py from here.
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"

exec "$python" -m uvicorn app:app \
    --app-dir "$here" \
    --host 127.0.0.1 \
    --port "$port" \
    --workers "$workers" \
    --loop uvloop \
    --http httptools \
    --no-access-log \
    --log-level warning
