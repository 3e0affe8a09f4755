#!/usr/bin/env bash
# Creates (once) the Python virtualenv used by train.py at ${TARGET_DIR:-<repo>/target}/phishing-venv
# and prints its python path on the last line:   "$(./setup.sh | tail -n1)" train.py
# Only PyPI is used: the Phishing data set ships inside the `river` package.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec "$here/../../scripts/python-venv.sh" phishing-venv "$here/requirements.txt"
