#!/usr/bin/env bash
# Builds the tier, answers every request of samples.jsonl through cascade.toml with
# `tierhost run`, and compares the label and the serving tier with expected.txt (one
# "LABEL TIER" line per request; `safe-default` when the tier fell back). Exit 1 on any
# mismatch. TIERHOST names the tierhost binary (default: `tierhost` on PATH).
set -euo pipefail
cd "$(dirname "$0")"
tierhost="${TIERHOST:-tierhost}"
./build.sh
"$tierhost" check --config cascade.toml >/dev/null
n=0
failed=0
while IFS= read -r request && IFS=' ' read -r want_label want_tier <&3; do
    n=$((n + 1))
    answer=$(printf '%s\n' "$request" | "$tierhost" run --config cascade.toml --input -)
    # The answer is pretty-printed JSON: the decision's label and served_by's tier are the
    # first "label" and "tier" keys at four spaces of indentation.
    label=$(printf '%s\n' "$answer" | sed -n 's/^    "label": "\(.*\)",\{0,1\}$/\1/p' | head -n 1)
    tier=$(printf '%s\n' "$answer" | sed -n 's/^    "tier": "\(.*\)",\{0,1\}$/\1/p' | head -n 1)
    if [ "$label" = "$want_label" ] && [ "$tier" = "$want_tier" ]; then
        echo "ok   request $n: $label from $tier"
    else
        echo "FAIL request $n: got $label from $tier, expected $want_label from $want_tier"
        printf '%s\n' "$answer"
        failed=$((failed + 1))
    fi
done < samples.jsonl 3< expected.txt
echo "$((n - failed)) of $n sample requests answered as expected"
[ "$failed" -eq 0 ]
