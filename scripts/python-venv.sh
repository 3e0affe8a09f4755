#!/usr/bin/env bash
# Creates (once) a Python virtualenv and installs a requirements file into it; prints the venv's
# python path as the last line of stdout (everything else goes to stderr).
#
#   scripts/python-venv.sh NAME REQUIREMENTS_TXT     -> venv at ${TARGET_DIR:-<repo>/target}/NAME
#
# The install is skipped when the stamp file in the venv matches the sha256 of the requirements
# plus the interpreter version, so calling this before every run costs milliseconds. A venv
# whose interpreter no longer runs is rebuilt. PYTHON picks the interpreter (default python3).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 NAME REQUIREMENTS_TXT" >&2
    exit 2
fi
name="$1"
requirements="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${TARGET_DIR:-$repo/target}"
venv="$target/$name"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

if [[ -d "$venv" ]] && ! "$venv/bin/python" -c 'pass' >/dev/null 2>&1; then
    echo "$name: venv at $venv is broken; recreating it" >&2
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$target"
    echo "$name: creating venv at $venv" >&2
    "$python" -m venv "$venv"
fi

want="$( { sha256sum "$requirements" | cut -d' ' -f1; "$venv/bin/python" -VV; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    echo "$name: installing $requirements" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --prefer-binary \
        -r "$requirements" >&2
    echo "$want" >"$stamp"
fi

echo "$venv/bin/python"
