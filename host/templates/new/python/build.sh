#!/usr/bin/env bash
# Builds the tier into {{name}}.wasm (a WebAssembly component) beside this script with
# componentize-py {{componentize_py}}, installed into .venv on first use (or the one named by
# COMPONENTIZE_PY). Needs python3 >= 3.10 with venv.
set -euo pipefail
cd "$(dirname "$0")"
componentize="${COMPONENTIZE_PY:-.venv/bin/componentize-py}"
if [ -z "${COMPONENTIZE_PY:-}" ] && ! "$componentize" --version 2>/dev/null | grep -qx "componentize-py {{componentize_py}}"; then
    echo "installing componentize-py {{componentize_py}} into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet "componentize-py=={{componentize_py}}"
fi
"$componentize" -d wit -w tier componentize app -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm ($(wc -c < {{name}}.wasm) bytes)"
