#!/usr/bin/env bash
# Front-end scaling (issue 11, item 7) on a borrowed 16-core GPU machine: front ends 1/2/4/8 against the
# synthetic model with H200 timings, 110 KB and 128-byte V2 binary bodies, closed loop and equal offered load.
# That machine has Python 3.12 with numpy, uvloop, httpx, prometheus-client, pyyaml and tqdm, no TensorFlow and
# no internet: the other wheels travel in .whl/ (CPython 3.12, manylinux x86_64). Run from the repository root:
#     bash load_tests/research/device_scaling.sh [extra load_tests.research.scaling flags, which override the ones below]
# Writes machine.txt, scaling.txt (the table) and scaling.json into $OUT. About 6 minutes; never more than 8.
set -euo pipefail
OUT="${OUT:-results/device}"
mkdir -p "$OUT"
SECONDS=0

if ! python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
then  # no pip: a wheel is a zip archive laid out for site-packages
    mkdir -p /tmp/site && for wheel in .whl/*.whl; do python3 -m zipfile -e "$wheel" /tmp/site; done
fi
export PYTHONPATH="/tmp/site:$PWD"

{
    echo "nproc: $(nproc)"
    lscpu | grep -m1 'Model name' || grep -m1 'model name' /proc/cpuinfo
    python3 -V
    nvidia-smi -L 2>/dev/null || true
    command -v taskset >/dev/null || echo "WARNING: no taskset here: nothing will be pinned"
    echo "wheels installed in ${SECONDS}s"
} | tee "$OUT/machine.txt"

# The server must start without TensorFlow: import what `python3 -m server.tools.cli serve` and the benchmark import.
python3 -c "
import sys
import fastapi, httptools, orjson, pydantic_settings, uvicorn, uvloop
import server.app, server.tools.cli, load_tests.research.scaling
assert 'tensorflow' not in sys.modules, 'tensorflow imported'
print('imports ok, no tensorflow')
" 2>&1 | tee -a "$OUT/machine.txt"

# 4 front-end counts x 2 repeats = 8 servers; each runs 2 bodies x (closed 256 connections + open at 0.3 x N=1's
# closed-loop req/s), ~8 s a point: ~5-6 minutes. The JSON is rewritten after every point, so a cut-off run keeps
# what it measured.
timeout -s INT -k 15 420 python3 -m load_tests.research.scaling --frontends 1,2,4,8 --connections 256 --connections-per-frontend 128 --duration 5 --warmup 1 \
    --repeats 2 --equal-load 0.3x --out "$OUT/scaling.json" "$@" 2>&1 | tee "$OUT/scaling.txt" || status=$?
echo "load_tests.research.scaling exit ${status:-0} (124: cut off at 420 s), total ${SECONDS}s" | tee -a "$OUT/machine.txt"
