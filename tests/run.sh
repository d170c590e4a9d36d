#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what is missing, then lints and runs every test
# (Python, the JS front end through node, the demo notebooks, and JupyterLab in headless Chromium).
# Extra arguments go to pytest, e.g. `bash tests/run.sh -m "not browser"`.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# The CPU build of torch first: a plain `pip install torch` would pull a multi-GB CUDA build.
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".[test]"

python3 -m ruff check .
python3 -m ruff format --check .
python3 -m pytest "$@"
