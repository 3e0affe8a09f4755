#!/usr/bin/env bash
# Builds the tier into {{name}}.wasm (a WebAssembly component) beside this script with
# componentize-js, pinned in package.json and installed into node_modules on first use (or the
# one named by COMPONENTIZE_JS). wasi:http is disabled: a tier has no network.
set -euo pipefail
cd "$(dirname "$0")"
componentize="${COMPONENTIZE_JS:-node_modules/.bin/componentize-js}"
if [ -z "${COMPONENTIZE_JS:-}" ] && [ ! -x "$componentize" ]; then
    echo "installing componentize-js into node_modules"
    npm install --no-audit --no-fund --silent
fi
"$componentize" app.js --wit wit --world-name tier -d http fetch-event -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
