#!/usr/bin/env bash
# The wheels that device_scaling.sh carries to a lent GPU machine (Python 3.12, x86-64, no package registry):
# what batchserve's server and benchmarks import beyond that machine's own packages (numpy, uvloop, httpx,
# prometheus-client, pyyaml, pillow, click, h11, anyio), at the versions installed in this checkout's .venv, so
# the machine runs what was tested here. gRPC and protobuf travel too: the server imports grpc_health and
# grpc_reflection, whose generated code checks the protobuf runtime's version.
# Run here, from the repository root, before the device call; it fills .whl/ (ignored by git, about 12 MB):
#     bash load_tests/research/device_wheels.sh
set -euo pipefail
PYTHON="${PYTHON:-.venv/bin/python}"
PACKAGES=(fastapi starlette annotated-doc opentelemetry-api uvicorn httptools orjson pydantic pydantic-core pydantic-settings
          python-dotenv annotated-types typing-inspection typing-extensions grpcio grpcio-health-checking
          grpcio-reflection protobuf)
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
rm -rf .whl && mkdir -p .whl
for package in "${PACKAGES[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package")
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .whl "$package==$version"
done
ls -l .whl | tail -n +2
echo "$(ls .whl | wc -l) wheels, $(du -sh .whl | cut -f1) in .whl/"
