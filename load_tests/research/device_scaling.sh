#!/usr/bin/env bash
# Front ends on a borrowed 16-core GPU machine (issues 11 and 25), in one go of about 6 minutes (never more than 8):
#   1. the floor there: one front end beside the bare uvicorn handler, pinned, 110 KB / 27 KB uint8 / JPEG / 128 B
#      binary V2 (load_tests/harness/floor.py);
#   2. scaling: front ends 1/2/4/8 at 110 KB (image float32), 27 KB (image uint8) and 128 B (tabular) binary V2,
#      closed loop with at least 128 connections per front end (256 for N=1, 1,024 for N=8), so that capacity,
#      not latency, is measured; 5 s a point, two repeats (load_tests/research/scaling.py);
#   3. one client: p50 of one front end beside the bare handler (load_tests/research/one_client.py).
# Every server runs the synthetic models with the H200's timings (base_ms 0.52, per_row_ms 0.0077, max batch 128,
# delay 2 ms: load_tests/harness/synthetic.py); the GPU itself is not used.
# That machine has Python 3.12 with numpy, uvloop, httpx, prometheus-client, pyyaml and pillow, no TensorFlow and
# no package registry: the other wheels travel in .whl/ (made here by load_tests/research/device_wheels.sh). From the
# repository root:
#     bash load_tests/research/device_scaling.sh [extra load_tests.research.scaling flags, which override these]
# Writes machine.txt, floor.txt, floor.json, scaling.txt, scaling.json, one_client.txt and one_client.json into $OUT.
set -euo pipefail
OUT="${OUT:-results/device}"
mkdir -p "$OUT"
SECONDS=0
export PYTHONUNBUFFERED=1

if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no wheels in .whl/: run 'bash load_tests/research/device_wheels.sh' where pip works, and carry .whl" >&2
    exit 2
fi
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

# The server must start without TensorFlow: import what serving and the benchmarks import.
python3 -c "
import sys
import fastapi, httptools, orjson, pydantic_settings, uvicorn, uvloop
import server.app, server.tools.cli, load_tests.bench, load_tests.research.scaling, load_tests.research.one_client
assert 'tensorflow' not in sys.modules, 'tensorflow imported'
print('imports ok, no tensorflow')
" 2>&1 | tee -a "$OUT/machine.txt"

step() {  # name, seconds allowed, command...: its exit status noted, the script goes on
    local name=$1 limit=$2 status=0
    shift 2
    timeout -s INT -k 15 "$limit" "$@" || status=$?
    echo "$name: exit $status (124: cut off at ${limit}s), ${SECONDS}s since the start" | tee -a "$OUT/machine.txt"
}

# 1. ~40 s: every body on one front end and on the bare handler, server on core 0, generator on core 1.
step floor 120 python3 -m load_tests.bench --floor-only --quick --pinned-only --output /tmp/floor 2>&1 \
    | tee "$OUT/floor.txt"
cp /tmp/floor/bench.json "$OUT/floor.json" 2>/dev/null || true

# 2. ~4.5 minutes: 4 front-end counts x 2 repeats = 8 servers, 3 bodies each. The JSON is rewritten after every
# point, so a cut-off run keeps what it measured.
step scaling 330 python3 -m load_tests.research.scaling --frontends 1,2,4,8 \
    --bodies image_classifier,image_uint8,tabular --connections 256 --connections-per-frontend 128 \
    --duration 5 --warmup 1 --repeats 2 --out "$OUT/scaling.json" "$@" 2>&1 | tee "$OUT/scaling.txt"

# 3. ~30 s: one client, V2 binary tabular, the synthetic model (0.53 ms a request) and the bare handler.
step one_client 60 python3 -m load_tests.research.one_client --synthetic 0.52 0.0077 --floor --rounds 2 \
    --duration 2 --out "$OUT/one_client.json" 2>&1 | tee "$OUT/one_client.txt"
echo "total ${SECONDS}s" | tee -a "$OUT/machine.txt"
