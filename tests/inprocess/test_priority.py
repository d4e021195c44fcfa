"""V2 ``parameters.priority`` follows Triton through every entry: 1 is the highest level, the model's
``priority_levels`` the lowest, 0 the default (the batcher's level 0). Each request is held by a puppet
batcher, which records the level it was queued at."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ..harness import Served, serving, syn_rule, synthetic_model
from ..payloads import grpc_infer_request, row_body

service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")

# (levels, Triton priority) -> the batcher's level: 0 lowest (and the default), levels - 1 highest
CASES = [(2, 1, 1), (2, 2, 0), (2, 0, 0), (3, 1, 2), (3, 2, 1), (3, 3, 0), (3, 0, 0)]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    root = tmp_path / "repo"
    synthetic_model(root, "two", priority_levels=2)
    synthetic_model(root, "three", priority_levels=3)
    async with serving(root, grpc=True) as server:
        yield server


async def _queued_level(served: Served, model: str, send: Any) -> int:
    puppet = await served.puppet(model)
    call = asyncio.ensure_future(send())
    [entry] = await puppet.submitted()
    entry.resolve(syn_rule(entry.inputs))
    answer = await call
    assert getattr(answer, "status", 200) == 200
    return entry.priority


@pytest.mark.parametrize("via", ["socket", "asgi"])
@pytest.mark.parametrize(("levels", "priority", "level"), CASES)
async def test_http(served: Served, via: str, levels: int, priority: int, level: int) -> None:
    model = {2: "two", 3: "three"}[levels]
    body = {**row_body(1), "parameters": {"priority": priority}}
    client = served.client(via)
    assert await _queued_level(served, model, lambda: client.post(f"/v2/models/{model}/infer", body)) == level


@pytest.mark.parametrize(("levels", "priority", "level"), CASES)
async def test_grpc_general_and_planned(served: Served, levels: int, priority: int, level: int) -> None:
    """The first call of a header takes the general path and makes a plan; the second is the plan's."""
    model = {2: "two", 3: "three"}[levels]
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = grpc_infer_request(1.0, model=model)
        request.parameters["priority"].int64_param = priority
        for _ in range(2):
            assert await _queued_level(served, model, lambda: stub.ModelInfer(request, timeout=10)) == level


@pytest.mark.parametrize("priority", [4, -1])
async def test_a_priority_outside_the_levels_is_refused(served: Served, priority: int) -> None:
    puppet = await served.puppet("three")
    answer = await served.client("socket").post("/v2/models/three/infer",
                                                 {**row_body(1), "parameters": {"priority": priority}})
    assert answer.status == 400 and "parameters.priority must be" in answer.json()["error"]
    assert puppet.received == []
