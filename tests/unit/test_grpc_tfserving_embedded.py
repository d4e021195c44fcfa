"""TF Serving's gRPC services served from the embedded descriptors alone (no tensorflow-serving-api, no
TensorFlow): Predict, GetModelMetadata and GetModelStatus in-process, called with the same messages, and
reflection listing exactly the services the start-up line names."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from server.grpc import protos
from server.grpc.server import SERVED_NAMES

from ..harness import Served, serving, synthetic_model
from ..payloads import grpc_method, tfs_predict_request

Msg = protos.message


@pytest.fixture
async def served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Served]:
    caplog.set_level(logging.INFO, logger="server.grpc.server")
    async with serving(synthetic_model(tmp_path / "repo", "syn"), grpc=True, http_socket=False) as server:
        yield server


@pytest.fixture
async def channel(served: Served) -> AsyncIterator[grpc.aio.Channel]:
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        yield channel


async def call(channel: grpc.aio.Channel, service: str, method: str, request: Any) -> Any:
    return await grpc_method(channel, service, method)(request, timeout=10)


async def test_predict(channel: grpc.aio.Channel) -> None:
    request = tfs_predict_request("syn", features=np.array([[1.5, 0, 0, 0], [2.5, 0, 0, 0]], np.float32))
    answer = await call(channel, protos.PREDICTION_SERVICE, "Predict", request)
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("syn", 1)
    assert list(answer.outputs["total"].float_val) == [1.5, 2.5]
    assert [d.size for d in answer.outputs["total"].tensor_shape.dim] == [2, 1]


async def test_model_metadata_and_status(channel: grpc.aio.Channel) -> None:
    request = Msg("tensorflow.serving.GetModelMetadataRequest")(metadata_field=["signature_def"])
    request.model_spec.name = "syn"
    answer = await call(channel, protos.PREDICTION_SERVICE, "GetModelMetadata", request)
    packed = answer.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signatures = Msg("tensorflow.serving.SignatureDefMap").FromString(packed.value)
    [(name, signature)] = signatures.signature_def.items()
    assert [d.size for d in signature.inputs["features"].tensor_shape.dim] == [-1, 4]

    status_request = Msg("tensorflow.serving.GetModelStatusRequest")()
    status_request.model_spec.name = "syn"
    status = await call(channel, protos.MODEL_SERVICE, "GetModelStatus", status_request)
    available = Msg("tensorflow.serving.ModelVersionStatus").State.Value("AVAILABLE")
    assert [(s.version, s.state) for s in status.model_version_status] == [(1, available)]


async def test_reflection_lists_what_the_start_up_line_names(channel: grpc.aio.Channel,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = [a async for a in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]))]
    listed = sorted(s.name for s in answers[0].list_services_response.service)
    assert listed == sorted([*protos.SERVICES, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"])
    [line] = [r.getMessage() for r in caplog.get_records("setup") if r.getMessage().startswith("gRPC on ")]
    assert line.endswith(": " + ", ".join(SERVED_NAMES))
    assert all(name in line for name in listed)
