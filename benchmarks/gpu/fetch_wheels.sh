#!/usr/bin/env bash
# Gather into .whl/ (git-ignored) the wheels that the lent GPU machine lacks, on a machine that reaches PyPI.
# The GPU machine has no network; its image already holds torch, torchvision, numpy, scipy, scikit-learn,
# scikit-image, matplotlib, pandas, numba, cloudpickle, tqdm, opencv and pytest (see the device tool's KINDS.md).
#   bash benchmarks/gpu/fetch_wheels.sh            # wheels for the GPU image's Python (3.12)
#   PYTHON_VERSION=3.11 bash benchmarks/gpu/fetch_wheels.sh   # for a dry run on this machine's Python
set -euo pipefail
cd "$(dirname "$0")/../.."
python_version=${PYTHON_VERSION:-3.12}
rm -rf .whl
mkdir -p .whl
target=(--only-binary=:all: --python-version "$python_version" --implementation cp
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip_download() { python3 -m pip download -q --disable-pip-version-check "${target[@]}" -d .whl "$@"; }

# The peers, without their declared dependencies (those would pull a CUDA build of torch); what they need
# beyond the image is named here: slicer for shap, ttach for pytorch-grad-cam.
pip_download --no-deps captum==0.9.0 shap==0.51.0 slicer==0.0.8 ttach==0.0.3
# lime and pytorch-grad-cam are published as source archives: build their pure-Python wheels here.
python3 -m pip wheel -q --disable-pip-version-check --no-deps -w .whl lime==0.2.0.1 grad-cam==1.5.7
# The widgets (the latency benchmark drives them) with their Jupyter stack: pure Python, dependencies included.
pip_download anywidget==0.11.0 ipywidgets==8.1.9

# The image has these already: two versions of a package would stop the install there.
rm -f .whl/typing_extensions-*.whl .whl/pygments-*.whl .whl/packaging-*.whl .whl/psutil-*.whl
ls .whl
du -sh .whl
