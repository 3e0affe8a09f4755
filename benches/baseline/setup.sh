#!/usr/bin/env bash
# Creates (once) the Python virtualenv for the baseline service and installs requirements.txt.
#
#   benches/baseline/setup.sh        -> last line of stdout: path of the venv's python
#
# The venv lives at ${TARGET_DIR:-<repo>/target}/baseline-venv. The install is skipped when the
# stamp file in the venv matches the sha256 of requirements.txt (plus the interpreter version),
# so running this before every benchmark costs a few milliseconds. Set PYTHON to pick the
# interpreter used to create the venv (default python3; needs 3.10+).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${TARGET_DIR:-$repo/target}"
venv="$target/baseline-venv"
requirements="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

# A venv whose interpreter no longer runs (e.g. the base python moved) is rebuilt.
if [[ -d "$venv" ]] && ! "$venv/bin/python" -c 'pass' >/dev/null 2>&1; then
    echo "baseline: venv at $venv is broken; recreating it" >&2
    rm -rf "$venv"
fi
if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$target"
    echo "baseline: creating venv at $venv" >&2
    "$python" -m venv "$venv"
fi

want="$( { sha256sum "$requirements" | cut -d' ' -f1; "$venv/bin/python" -VV; } | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
    echo "baseline: installing $requirements" >&2
    # pip's own output goes to stderr: stdout's last line is reserved for the python path.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --prefer-binary \
        -r "$requirements" >&2
    echo "$want" >"$stamp"
fi

echo "$venv/bin/python"
