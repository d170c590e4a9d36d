#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then lints and runs every test
# (Python, the JS front end through node, the demo notebooks, and JupyterLab in headless Chromium).
# Python packages go into the project's .venv/ (see scripts/venv.sh); Debian's chromium and nodejs are installed
# with apt when missing. Extra arguments go to pytest, e.g. `bash tests/run.sh -m "not browser"`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi
ensure_venv test

python -m ruff check .
python -m ruff format --check .
python -m pytest "$@"
