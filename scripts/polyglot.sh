#!/usr/bin/env bash
# Builds the Python tiers of this repository into target/polyglot/*.wasm with componentize-py
# (pinned below, installed into target/polyglot/venv from PyPI on first use; needs python3 >=
# 3.10 with venv). A component is rebuilt only when its sources, the SDK, the WIT or the
# pinned version changed. Used by scripts/test.sh before the tests (tests/polyglot.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

COMPONENTIZE_PY_VERSION=0.25.1
out=target/polyglot
venv="$out/venv"
mkdir -p "$out"
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    echo "==> installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# build NAME MODULE DIR: DIR/MODULE.py (+ the SDK in plugins/python) -> target/polyglot/NAME.wasm
build() {
    local name=$1 module=$2 dir=$3
    local wasm="$out/$name.wasm" stamp="$out/$name.inputs"
    local inputs
    inputs=$( (echo "$COMPONENTIZE_PY_VERSION"; cat wit/tier.wit plugins/python/*.py "$dir"/*.py) | sha256sum)
    if [ -f "$wasm" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
        echo "==> $wasm is up to date"
        return
    fi
    echo "==> componentize-py: $dir/$module.py -> $wasm"
    local started=$SECONDS
    "$venv/bin/componentize-py" -d wit -w tier componentize "$module" \
        -p "$dir" -p plugins/python -o "$wasm.tmp" >/dev/null
    mv "$wasm.tmp" "$wasm"
    echo "$inputs" > "$stamp"
    echo "    $(( $(wc -c < "$wasm") / 1024 / 1024 )) MiB in $((SECONDS - started)) s"
}

build fraud-rules-py app examples/fraud/python
build faults-py faults tests/fixtures/python
