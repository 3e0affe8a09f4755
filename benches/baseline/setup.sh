#!/usr/bin/env bash
# Creates (once) the Python virtualenv of the baseline service at
# ${TARGET_DIR:-<repo>/target}/baseline-venv; the last line of stdout is its python path.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../../scripts/python-venv.sh" baseline-venv "$here/requirements.txt"
