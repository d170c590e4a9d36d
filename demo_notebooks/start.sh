#!/usr/bin/env bash
# The main job: install livexai with its demo extras and open the demo notebooks in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CPU build of torch first: a plain `pip install torch` would pull a multi-GB CUDA build.
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".[demo]"
root_flag=()
[ "$(id -u)" = 0 ] && root_flag=(--allow-root)
exec python3 -m jupyter lab --ServerApp.ip=127.0.0.1 "${root_flag[@]}" "$@" demo_notebooks/01_quickstart.ipynb
