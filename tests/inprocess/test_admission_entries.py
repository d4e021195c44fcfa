"""One admission pipeline for every entry: the in-protocol HTTP path, the ASGI path (chunked bodies, and
httpx's ASGI transport) and gRPC refuse an overloaded ``slo`` model and a body past ``max_inflight_bytes``
alike, counted the same way. The front end's lag is set by the test (its LoopLag reports it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ..harness import Served, request_bytes, serving, syn_rule, synthetic_model
from ..payloads import grpc_infer_request, row_body

service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    root = tmp_path / "repo"
    synthetic_model(root, "syn", scheduling="slo", slo_ms=100)
    async with serving(root, grpc=True, overload_share=0.5, max_inflight_bytes=4096) as server:
        yield server


def _behind(served: Served, seconds: float) -> None:
    lag = served.app.state.loop_lag
    lag.behind = lambda hold=0.0: seconds


async def _http(served: Served, via: str, body: Any) -> Any:
    if via == "chunked":  # the in-protocol path leaves chunked bodies to the ASGI path
        connection = await served.connect()
        await connection.send(request_bytes("POST", "/v2/models/syn/infer", body, chunked=True))
        return await connection.response()
    return await served.client(via).post("/v2/models/syn/infer", body)


async def _grpc_code(served: Served, request: Any) -> Any:
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    return raised.value.code(), dict(raised.value.trailing_metadata() or ())


@pytest.mark.parametrize("via", ["socket", "asgi", "chunked"])
async def test_an_overloaded_model_is_refused_on_every_http_entry(served: Served, via: str) -> None:
    _behind(served, 0.2)  # more than overload_share of the 100 ms budget
    answer = await _http(served, via, row_body(1))
    assert answer.status == 503 and answer.headers["retry-after"] == "1"
    assert "the server is overloaded" in answer.json()["error"]
    assert await served.metric("batchserve_rejected_total", model="syn", reason="overloaded") == 1
    _behind(served, 0.0)
    assert (await _http(served, via, row_body(1))).status == 200


async def test_an_overloaded_model_is_refused_over_grpc(served: Served) -> None:
    _behind(served, 0.2)
    code, trailing = await _grpc_code(served, grpc_infer_request(1.0))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and trailing["retry-after"] == "1"
    assert await served.metric("batchserve_rejected_total", model="syn", reason="overloaded") == 1


@pytest.mark.parametrize("via", ["socket", "asgi", "chunked"])
async def test_a_body_past_the_bytes_in_flight_is_refused_and_counted_alike(served: Served, via: str) -> None:
    _behind(served, 0.0)  # the loop's real lag on a busy machine must not refuse these as overloaded
    puppet = await served.puppet("syn")
    held = asyncio.ensure_future(_http(served, "socket", row_body(1.0)))  # its body is held in flight
    [first] = await puppet.submitted()
    answer = await _http(served, via, row_body(1.0, rows=300))  # about 5 KB: past 4096 bytes with the first
    assert answer.status == 503 and answer.headers["retry-after"] == "1"
    assert answer.json()["error"].startswith("this front end holds 0 MiB of request bodies (max_inflight_bytes=4096)")
    assert await served.metric("batchserve_rejected_total", model="syn", reason="inflight_full") == 1
    first.resolve(syn_rule(first.inputs))
    assert (await held).status == 200
    # released: now it is served, also as a chunked body larger than max_inflight_bytes arriving in pieces
    big = asyncio.ensure_future(_http(served, via, row_body(1.0, rows=300)))
    [entry] = await puppet.submitted()
    entry.resolve(syn_rule(entry.inputs))
    assert (await big).status == 200


async def test_a_call_past_the_bytes_in_flight_is_refused_over_grpc(served: Served) -> None:
    _behind(served, 0.0)
    puppet = await served.puppet("syn")
    held = asyncio.ensure_future(_http(served, "socket", row_body(1.0)))
    [first] = await puppet.submitted()
    code, trailing = await _grpc_code(served, grpc_infer_request(1.0, rows=300))
    assert code == grpc.StatusCode.UNAVAILABLE and trailing["retry-after"] == "1"
    assert await served.metric("batchserve_rejected_total", model="syn", reason="inflight_full") == 1
    first.resolve(syn_rule(first.inputs))
    assert (await held).status == 200


async def test_a_version_retired_while_the_body_arrives_does_not_fail_the_request(served: Served,
                                                                                   tmp_path: Path) -> None:
    """Admission resolves the version to judge overload; if that version is retired before the body is in,
    the request goes to the version serving then (a version switch fails no request)."""
    _behind(served, 0.01)  # over FLOOR: admission looks the version up; under overload_share of 100 ms: admitted
    connection = await served.connect()
    data = request_bytes("POST", "/v2/models/syn/infer", row_body(2.0))
    await connection.send(data[:-10])  # the headers and most of the body: admitted, the version resolved
    synthetic_model(tmp_path / "repo", "syn", versions=(2,), scheduling="slo", slo_ms=100)
    repository = served.app.state.service.repository
    await repository.sync()  # version 2 loads, version 1 (latest:1) drains and is retired
    assert [mv.version for mv in repository.versions("syn")] == [2]
    await connection.send(data[-10:])
    answer = await connection.response()
    assert answer.status == 200, answer.content
    assert answer.json()["model_version"] == "2"
