#!/usr/bin/env bash
# The main job: install livexai with its demo extras and open the demo notebooks in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CPU build of torch first: a plain `pip install torch` would pull a multi-GB CUDA build.
python3 -m pip install -q --disable-pip-version-check torch==2.13.0
python3 -m pip install -q --disable-pip-version-check -e ".[demo]"
# glibc: keep freed activation buffers in the process instead of handing them back to the system after every
# forward pass; torch CPU inference ran up to 2x faster with this (see benchmarks/README.md). No effect elsewhere.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
root_flag=()
[ "$(id -u)" = 0 ] && root_flag=(--allow-root)
exec python3 -m jupyter lab --ServerApp.ip=127.0.0.1 "${root_flag[@]}" "$@" demo_notebooks/01_quickstart.ipynb
