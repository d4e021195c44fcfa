"""Triton's model configuration and statistics extensions, read with tritonclient (HTTP and gRPC) in both
layouts: one process, and a front end with the engine (the batch counters are the engine's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

from ..harness import Served, serving

http_aio = pytest.importorskip("tritonclient.http.aio")
grpc_aio = pytest.importorskip("tritonclient.grpc.aio")
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
utils = pytest.importorskip("tritonclient.utils")


@pytest.fixture(params=[False, True], ids=["one process", "front end"])
async def served(repository: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    async with serving(repository, grpc=True, frontends=request.param) as server:
        yield server


@pytest.fixture
async def clients(served: Served) -> AsyncIterator[tuple[Any, Any]]:
    assert served.grpc_target is not None
    http = http_aio.InferenceServerClient(served.url.removeprefix("http://"))
    grpc = grpc_aio.InferenceServerClient(served.grpc_target)
    try:
        yield http, grpc
    finally:
        await http.close()
        await grpc.close()


async def test_the_config_is_tritons_and_both_protocols_agree(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    config = await http.get_model_config("syn")
    assert {k: config[k] for k in ("name", "platform", "backend", "max_batch_size")} == {
        "name": "syn", "platform": "synthetic", "backend": "synthetic", "max_batch_size": 4}
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [4]}]
    assert config["output"] == [{"name": "total", "data_type": "TYPE_FP32", "dims": [1]}]
    assert set(config["dynamic_batching"]) == {"preferred_batch_size", "max_queue_delay_microseconds",
                                               "priority_levels"}
    assert config["instance_group"] == [{"name": "syn", "count": 1, "kind": "KIND_CPU"}]
    assert (await http.get_model_config("echo", "1"))["input"][0]["data_type"] == "TYPE_STRING"
    answer = await grpc.get_model_config("syn")
    assert answer.config == json_format.ParseDict(config, model_config_pb2.ModelConfig())
    assert {"model_configuration", "statistics"} <= set((await http.get_server_metadata())["extensions"])


async def _infer_http(http: Any, rows: int) -> None:
    features = http_aio.InferInput("features", [rows, 4], "FP32")
    features.set_data_from_numpy(np.ones((rows, 4), np.float32))
    await http.infer("syn", [features])


async def _infer_grpc(grpc: Any, columns: int = 4) -> None:
    features = grpc_aio.InferInput("features", [1, columns], "FP32")
    features.set_data_from_numpy(np.ones((1, columns), np.float32))
    await grpc.infer("syn", [features])


async def test_statistics_count_the_requests_sent(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    for _ in range(3):
        await _infer_http(http, 1)
    await _infer_http(http, 2)
    await _infer_grpc(grpc)
    with pytest.raises(utils.InferenceServerException):
        await _infer_grpc(grpc, columns=3)  # a bad shape: failed
    [stats] = (await http.get_inference_statistics("syn"))["model_stats"]
    assert (stats["name"], stats["version"]) == ("syn", "1")
    inference = stats["inference_stats"]
    assert (inference["success"]["count"], inference["fail"]["count"], inference["queue"]["count"]) == (5, 1, 5)
    assert inference["success"]["ns"] > 0 and inference["fail"]["ns"] > 0
    assert stats["inference_count"] == inference["compute_infer"]["count"] == 6  # rows: one request had 2
    batches = stats["batch_stats"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == 6
    assert stats["execution_count"] == sum(b["compute_infer"]["count"] for b in batches)
    assert stats["last_inference"] > 1.6e12  # milliseconds since the epoch
    answer = await grpc.get_inference_statistics("syn", "1", as_json=True)
    assert json_format.ParseDict(answer, grpc_aio.service_pb2.ModelStatisticsResponse()) == json_format.ParseDict(
        await http.get_inference_statistics("syn", "1"), grpc_aio.service_pb2.ModelStatisticsResponse())


async def test_every_ready_model_is_listed_and_unknown_ones_are_errors(clients: tuple[Any, Any]) -> None:
    http, grpc = clients
    listed = (await http.get_inference_statistics())["model_stats"]
    assert sorted((s["name"], s["version"], s["inference_count"]) for s in listed) == [
        ("echo", "1", 0), ("mixed", "1", 0), ("syn", "1", 0)]
    assert len((await grpc.get_inference_statistics()).model_stats) == 3
    for call in (http.get_inference_statistics("nope"), grpc.get_inference_statistics("nope"),
                 http.get_model_config("nope"), http.get_inference_statistics("syn", "7")):
        with pytest.raises(utils.InferenceServerException):
            await call
