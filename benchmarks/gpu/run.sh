#!/usr/bin/env bash
# On the lent GPU machine, from the repository root: install the wheels carried in .whl/ (see
# fetch_wheels.sh), then run one part and leave its log, RESULTS.md and nvidia-smi's report in $OUT.
#   bash benchmarks/gpu/run.sh tests     # the test suite without browser, notebooks, node or packaging: CUDA on
#   bash benchmarks/gpu/run.sh peers     # python -m benchmarks.peers --device cuda (small CNN, ResNet-18, -50)
#   bash benchmarks/gpu/run.sh latency   # python -m benchmarks.latency --device cuda
# Each part fits in one 10-minute call; extra arguments go to the benchmark (e.g. --quick, --models resnet50).
# LIVEXAI_BENCH_DEVICE=cpu runs the same steps on a CPU, to check the kit before a GPU is lent.
set -euo pipefail
cd "$(dirname "$0")/../.."
part=${1:?say which part: tests, peers or latency}
shift
out=${OUT:-benchmarks/out}
device=${LIVEXAI_BENCH_DEVICE:-cuda}
mkdir -p "$out"

site=${LIVEXAI_SITE:-/tmp/livexai-site}
python3 -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
  --upgrade --target "$site" .whl/*.whl
export PYTHONPATH="$PWD/src:$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$out/device.txt"
if command -v nvidia-smi >/dev/null; then nvidia-smi >>"$out/device.txt" 2>&1 || true; fi

status=0
case "$part" in
  tests)
    # The browser, notebook, node and packaging tests need Chromium, a Jupyter kernel, node or a build backend.
    skip=(test_browser.py test_browser_explorer.py test_notebooks.py test_js.py test_packaging.py)
    python3 -m pytest -q -p no:cacheprovider tests "${skip[@]/#/--ignore=tests/}" "$@" 2>&1 |
      tee "$out/tests.log" || status=$?
    ;;
  peers | latency)
    python3 -m "benchmarks.$part" --device "$device" "$@" 2>&1 | tee "$out/$part.log" || status=$?
    ;;
  *)
    echo "unknown part $part: expected tests, peers or latency" >&2
    exit 2
    ;;
esac
cp benchmarks/RESULTS.md "$out/"
exit "$status"
