"""Count the hand-offs of one request: every call from one ``server``/``batching`` module into another.

    python -m load_tests.research.request_hops [out.json]

Serves the synthetic ``syn`` model in-process (tests/harness.py, so run it from a checkout), sends the
same V2 binary request three times over the in-protocol path ("socket"), the ASGI path and gRPC, and
traces the third with ``sys.setprofile``; prints, per entry, the modules crossed, the hand-offs and
those before ``Batcher.submit``. docs/architecture.md quotes its figures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import numpy as np

from tests.harness import serving, synthetic_model
from tests.payloads import binary_body, grpc_infer_request

Hop = tuple[str, str, str]  # caller's module, callee's module, callee's function


def _ours(module: str) -> bool:
    return module.startswith(("server", "batching"))


class Tracer:
    def __init__(self) -> None:
        self.hops: list[Hop] = []

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
        if _ours(callee) and _ours(caller) and caller != callee:
            self.hops.append((caller, callee, frame.f_code.co_name))


async def trace() -> dict[str, list[Hop]]:
    from tritonclient.grpc import service_pb2_grpc

    root = Path(tempfile.mkdtemp()) / "repo"
    synthetic_model(root, "syn")
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, headers = binary_body({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4],
                                             "parameters": {"binary_data_size": rows.nbytes}}],
                                 "outputs": [{"name": "total", "parameters": {"binary_data": True}}]}, rows.tobytes())
    traced: dict[str, list[Hop]] = {}
    async with serving(root, grpc=True) as served, grpc.aio.insecure_channel(served.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for via in ("socket", "asgi", "grpc"):
            for attempt in range(3):  # the third is traced: connections, plans and caches are warm
                tracer = Tracer()
                if attempt == 2:
                    sys.setprofile(tracer)
                try:
                    if via == "grpc":
                        await stub.ModelInfer(grpc_infer_request(1.5, rows=2), timeout=10)
                    else:
                        assert (await served.client(via).post("/v2/models/syn/infer", body, headers)).status == 200
                finally:
                    sys.setprofile(None)
            traced[via] = tracer.hops
    return traced


def main() -> None:
    traced = asyncio.run(trace())
    for via, hops in traced.items():
        modules = {module for hop in hops for module in hop[:2]}
        before = next((i for i, hop in enumerate(hops) if hop[1] == "batching.batcher"), len(hops))
        print(f"{via:6s} modules {len(modules):3d}  hand-offs {len(hops):3d}  before Batcher.submit {before:3d}")
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(traced, indent=1))


if __name__ == "__main__":
    main()
