#!/usr/bin/env bash
# Install livexai with its demo extras into the project's .venv/ (see scripts/venv.sh) and open the first demo
# notebook in JupyterLab. Extra arguments go to `jupyter lab`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv demo
# The shipped notebooks are ours: mark them trusted so JupyterLab does not warn about them.
python -m jupyter trust demo_notebooks/*.ipynb >/dev/null
# glibc: keep freed activation buffers in the process instead of handing them back to the system after every
# forward pass; torch CPU inference ran up to 2x faster with this (see benchmarks/README.md). No effect elsewhere.
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-1073741824}
export MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-1073741824}
root_flag=()
[ "$(id -u)" = 0 ] && root_flag=(--allow-root)
exec python -m jupyter lab --ServerApp.ip=127.0.0.1 "${root_flag[@]}" \
  --LabApp.default_url=/lab/tree/demo_notebooks/01_quickstart.ipynb "$@"
