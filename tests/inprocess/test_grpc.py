"""gRPC (KServe V2, and TF Serving from the embedded descriptors) served in-process on a local port:
answers, failures as statuses with their retry delay, a call's deadline, cancellation, and accounting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from batching import DeadlineExceeded, QueueFull
from server.grpc import protos

from ..harness import Served, serving, syn_rule
from ..payloads import grpc_infer_request, grpc_method, grpc_totals, tfs_predict_request

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")


@pytest.fixture
async def served(repository: Path) -> AsyncIterator[Served]:
    async with serving(repository, grpc=True, http_socket=False) as server:
        yield server


async def test_model_infer_answers_each_row(stub: Any) -> None:
    answer = await stub.ModelInfer(grpc_infer_request(1.5, rows=3), timeout=10)
    assert (answer.model_name, answer.model_version) == ("syn", "1")
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [("total", "FP32", [3, 1])]
    assert grpc_totals(answer) == [1.5, 1.5, 1.5]


async def test_liveness_readiness_and_metadata(stub: Any) -> None:
    assert (await stub.ServerLive(service_pb2.ServerLiveRequest())).live
    assert (await stub.ModelReady(service_pb2.ModelReadyRequest(name="syn"))).ready
    assert not (await stub.ModelReady(service_pb2.ModelReadyRequest(name="broken"))).ready
    metadata = await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="syn"))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("features", "FP32", [-1, 4])]


@pytest.mark.parametrize(("request_", "code", "details"), [
    (grpc_infer_request(1, model="nope"), grpc.StatusCode.NOT_FOUND,
     "model 'nope' is not in the repository; models: ['broken', 'echo', 'mixed', 'syn']"),
    (grpc_infer_request(1, model="broken"), grpc.StatusCode.UNAVAILABLE, "model 'broken' failed to load: "),
], ids=["unknown model", "not ready"])
async def test_failures_before_the_batcher_are_statuses(stub: Any, request_: Any, code: grpc.StatusCode,
                                                        details: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(request_, timeout=10)
    assert raised.value.code() == code
    assert raised.value.details().startswith(details)


async def test_a_bad_shape_is_invalid_argument(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ModelInfer(grpc_infer_request(0, columns=3), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == "input 'features' expects shape [-1, 4], got [1, 3] (dimension 1 must be 4)"


async def test_a_full_queue_is_resource_exhausted_with_the_retry_delay(served: Served, stub: Any) -> None:
    puppet = await served.puppet("syn")
    call = asyncio.ensure_future(stub.ModelInfer(grpc_infer_request(1), timeout=10))
    [request] = await puppet.submitted(1)
    request.fail(QueueFull("queue full: 8 rows waiting, 1 more would exceed max_queue_size=8", retry_after=2.5))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert raised.value.details() == "queue full: 8 rows waiting, 1 more would exceed max_queue_size=8"
    trailing = dict(raised.value.trailing_metadata())
    assert (trailing["retry-after"], trailing["grpc-retry-pushback-ms"]) == ("3", "3000")


async def test_the_calls_deadline_is_the_requests(served: Served, stub: Any) -> None:
    puppet = await served.puppet("syn")
    call = asyncio.ensure_future(stub.ModelInfer(grpc_infer_request(1, timeout_us=200_000), timeout=30))
    [request] = await puppet.submitted(1)
    left = request.time_left()
    assert left is not None and 0 < left <= 0.2  # the earlier of parameters.timeout and the call's deadline
    request.fail(DeadlineExceeded("the request's deadline passed while it was queued"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.details() == "the request's deadline passed while it was queued"


async def test_a_cancelled_call_leaves_the_batcher_and_each_call_is_counted_once(served: Served, stub: Any) -> None:
    puppet = await served.puppet("syn")
    call = stub.ModelInfer(grpc_infer_request(1), timeout=30)
    [request] = await puppet.submitted(1)
    call.cancel()
    await asyncio.wait_for(request.cancelled.wait(), 10)
    answered = asyncio.ensure_future(stub.ModelInfer(grpc_infer_request(2), timeout=10))
    await puppet.answer(syn_rule)
    assert grpc_totals(await answered) == [2.0]
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ModelInfer(grpc_infer_request(1, model="nope"), timeout=10)
    assert await served.requests_by_code(protocol="grpc", model="syn") == {"200": 1, "499": 1}
    assert await served.requests_by_code(protocol="grpc", model="_unknown") == {"404": 1}


async def test_tf_serving_predict(served: Served) -> None:
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        predict = grpc_method(channel, protos.PREDICTION_SERVICE, "Predict")
        answer = await predict(tfs_predict_request("syn", features=np.array([[1, 0, 0, 0], [7, 0, 0, 0]], np.float32)),
                               timeout=10)
    total = answer.outputs["total"]
    assert [d.size for d in total.tensor_shape.dim] == [2, 1]
    values = np.frombuffer(total.tensor_content, np.float32) if total.tensor_content else np.array(total.float_val)
    assert values.tolist() == [1.0, 7.0]
    assert await served.requests_by_code(protocol="grpc", model="syn") == {"200": 1}
