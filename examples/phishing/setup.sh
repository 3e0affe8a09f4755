#!/usr/bin/env bash
# Creates (once) the Python virtualenv used by train.py and prints its python path on the
# last line of output.
#
#   ./setup.sh                        # venv at <repo root>/target/phishing-venv
#   TARGET_DIR=/tmp/t ./setup.sh      # venv at /tmp/t/phishing-venv
#   "$(./setup.sh | tail -n1)" train.py
#
# Idempotent: the venv holds a stamp file with the sha256 of requirements.txt; when the
# stamp matches, nothing is installed again. Only PyPI is used (nothing else is downloaded;
# the Phishing data set ships inside the `river` package).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
target_dir="${TARGET_DIR:-$repo_root/target}"
venv="$target_dir/phishing-venv"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"
python_bin="${PYTHON:-python3.11}"
if ! command -v "$python_bin" >/dev/null 2>&1; then
    python_bin=python3
fi

want="$(sha256sum "$req" | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup.sh: creating venv at $venv with $("$python_bin" --version 2>&1)" >&2
    mkdir -p "$target_dir"
    "$python_bin" -m venv "$venv"
    have=""
fi

if [[ "$want" != "$have" ]]; then
    echo "setup.sh: installing $req" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
else
    echo "setup.sh: venv up to date ($venv)" >&2
fi

echo "$venv/bin/python"
