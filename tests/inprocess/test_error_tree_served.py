"""The error tree end to end: every registered error class (tests/unit/test_error_tree.py pins its
mapping) raised by ``syn``'s batcher and answered with its status, message and retry delay: in one
process (a puppet fails the request) over real HTTP (the in-protocol fast path on a socket) and real
gRPC (KServe V2); and through a front end, where the engine's batch fails and the error crosses the link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from batching import ComputeLost

from ..harness import Served, serving
from ..payloads import INFER, grpc_infer_request, row_body
from ..unit.test_error_tree import CLASSES, expected, made


@pytest.fixture
async def served(repository: Path) -> AsyncIterator[Served]:
    async with serving(repository, grpc=True) as server:
        yield server


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
async def test_a_batch_failing_with_each_error_class(served: Served, kind: type[BaseException]) -> None:
    service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
    status, code, _, seconds = expected(kind)
    delay = None if seconds is None else str(max(seconds, 3))
    puppet = await served.puppet("syn")
    http = served.client("socket")
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        stub: Any = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answer = asyncio.ensure_future(http.post(INFER, row_body(1)))
        call = asyncio.ensure_future(stub.ModelInfer(grpc_infer_request(1), timeout=10))
        for request in await puppet.submitted(2):
            request.fail(made(kind, predicted=2.2))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
    error = str(made(kind))
    assert raised.value.code() == grpc.StatusCode[code]
    assert raised.value.details() == error
    assert dict(raised.value.trailing_metadata() or ()).get("retry-after") == delay
    response = await answer
    assert (response.status, response.json(), response.headers.get("retry-after")) == (status, {"error": error}, delay)


@pytest.fixture
async def engine_served(repository: Path) -> AsyncIterator[Served]:
    async with serving(repository, frontends=True) as server:
        yield server


@pytest.mark.parametrize("kind", [kind for kind in CLASSES if not issubclass(kind, ComputeLost)],
                         ids=lambda kind: kind.__name__)  # ComputeLost: the batcher runs the batch again
async def test_a_batch_failing_in_the_engine(engine_served: Served, kind: type[BaseException]) -> None:
    """The same through a front end: the engine's batch fails, the error crosses the link and is rebuilt."""
    status, _, _, seconds = expected(kind)
    held, _ = await engine_served.hold("syn")
    answer = asyncio.ensure_future(engine_served.client("socket").post(INFER, row_body(1)))
    [batch] = await held.held(1)
    batch.fail(made(kind, predicted=2.2))
    response = await answer
    delay = None if seconds is None else str(max(seconds, 3))
    assert (response.status, response.json(), response.headers.get("retry-after")) == (
        status, {"error": str(made(kind))}, delay)
