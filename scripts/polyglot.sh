#!/usr/bin/env bash
# Builds the Python and JavaScript tiers of this repository into target/polyglot/*.wasm:
# Python with componentize-py (pinned below, installed into target/polyglot/venv from PyPI on
# first use; needs python3 >= 3.10 with venv), JavaScript with componentize-js (pinned in
# scripts/js/package.json + package-lock.json, installed with `npm install` from that lock into
# target/polyglot/node; node and npm come from Debian when missing). A component is rebuilt
# only when its sources, the SDK, the WIT or the pinned version changed. Used by
# scripts/test.sh before the tests (tests/polyglot.rs).
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

if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing Debian packages: nodejs npm"
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
node_dir="$out/node"
if ! cmp -s scripts/js/package-lock.json "$node_dir/package-lock.json" \
    || [ ! -x "$node_dir/node_modules/.bin/componentize-js" ]; then
    echo "==> npm install: componentize-js (scripts/js/package.json) into $node_dir"
    mkdir -p "$node_dir"
    cp scripts/js/package.json scripts/js/package-lock.json "$node_dir/"
    # `npm ci` refuses this lock (npm records optional per-platform packages of jco without a
    # version, then calls the lock out of sync); `npm install` honours the same pinned lock.
    (cd "$node_dir" && npm install --no-audit --no-fund --silent)
fi

# build_js NAME FILE: FILE (+ the SDK in plugins/js, copied beside it) -> target/polyglot/NAME.wasm.
# wasi:http is disabled: a tier has no network, and the host links none.
build_js() {
    local name=$1 file=$2
    local wasm="$out/$name.wasm" stamp="$out/$name.inputs" stage="$out/js-src/$name"
    local inputs
    inputs=$( (cat scripts/js/package-lock.json wit/tier.wit plugins/js/*.js "$file") | sha256sum)
    if [ -f "$wasm" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
        echo "==> $wasm is up to date"
        return
    fi
    echo "==> componentize-js: $file -> $wasm"
    local started=$SECONDS
    rm -rf "$stage" && mkdir -p "$stage"
    cp plugins/js/*.js "$file" "$stage/"
    "$node_dir/node_modules/.bin/componentize-js" "$stage/$(basename "$file")" --wit wit \
        --world-name tier -d http fetch-event -o "$wasm.tmp" >/dev/null
    mv "$wasm.tmp" "$wasm"
    echo "$inputs" > "$stamp"
    echo "    $(( $(wc -c < "$wasm") / 1024 / 1024 )) MiB in $((SECONDS - started)) s"
}

build_js fraud-rules-js examples/fraud/js/app.js
build_js loop-js tests/fixtures/js/loop.js
