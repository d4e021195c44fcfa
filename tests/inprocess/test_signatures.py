"""A model with several signatures: each served over one load, chosen per request on every protocol (TF Serving
``signature_name``, V2 ``parameters.signature_name``, gRPC), listed in metadata, with a batcher (and series
labelled by signature) each, and the model's instances shared between them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from server.grpc import protos

from ..harness import SYN, Client, Served, serving, synthetic_model
from ..observe import until
from ..payloads import grpc_infer_request, tfs_predict_request

EMBED = {"inputs": {"tokens": {"datatype": "INT32", "shape": [-1, 3]}},
         "outputs": {"vector": {"datatype": "FP32", "shape": [-1, 2]}}}
"""``multi``'s second signature: each answer row is the row's first token, twice."""


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    gate = tmp_path / "gate"
    synthetic_model(root, "multi", SYN,
                    synthetic={"base_ms": 0.0, "gate_path": str(gate), "signatures": {"embed": EMBED}})
    return synthetic_model(root, "syn")


@pytest.fixture(params=[False, True], ids=["one-process", "frontend-engine"])
async def served(repository: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    async with serving(repository, grpc=True, frontends=request.param) as server:
        yield server


@pytest.fixture(params=["socket", "asgi"])
def http(served: Served, request: pytest.FixtureRequest) -> Client:
    return served.client(request.param)


async def test_tf_serving_rest_runs_the_signature_named(http: Client) -> None:
    embed = await http.post("/v1/models/multi:predict", {"signature_name": "embed", "instances": [[7, 1, 1], [2, 0, 0]]})
    assert (embed.status, embed.json()) == (200, {"predictions": [[7.0, 7.0], [2.0, 2.0]]})
    columns = await http.post("/v1/models/multi:predict", {"signature_name": "embed", "inputs": {"tokens": [[4, 0, 0]]}})
    assert (columns.status, columns.json()) == (200, {"outputs": [[4.0, 4.0]]})
    default = await http.post("/v1/models/multi:predict", {"instances": [[3, 0, 0, 0]]})
    assert (default.status, default.json()) == (200, {"predictions": [[3.0]]})
    named_default = await http.post("/v1/models/multi:predict",
                                    {"signature_name": "serving_default", "instances": [[5, 0, 0, 0]]})
    assert (named_default.status, named_default.json()) == (200, {"predictions": [[5.0]]})


async def test_an_unknown_signature_or_another_signatures_inputs_are_400(http: Client) -> None:
    unknown = await http.post("/v1/models/multi:predict", {"signature_name": "nope", "instances": [[1, 2, 3]]})
    assert (unknown.status, unknown.json()) == (
        400, {"error": "signature 'nope' is not served for model 'multi'; served: ['serving_default', 'embed']"})
    wrong = await http.post("/v1/models/multi:predict", {"signature_name": "embed", "instances": [[1.5, 0, 0, 0]]})
    assert wrong.status == 400
    v2 = await http.post("/v2/models/multi/infer", {"parameters": {"signature_name": 3}, "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    assert (v2.status, v2.json()) == (400, {"error": "parameters.signature_name must be a string, got 3"})


async def test_v2_json_takes_the_signature_as_a_parameter(http: Client) -> None:
    answer = await http.post("/v2/models/multi/infer", {"parameters": {"signature_name": "embed"}, "inputs": [
        {"name": "tokens", "datatype": "INT32", "shape": [2, 3], "data": [6, 0, 0, 9, 0, 0]}]})
    assert answer.status == 200
    assert answer.json()["outputs"] == [{"name": "vector", "datatype": "FP32", "shape": [2, 2],
                                         "data": [6.0, 6.0, 9.0, 9.0]}]
    unknown = await http.post("/v2/models/multi/infer", {"parameters": {"signature_name": "nope"}, "inputs": [
        {"name": "tokens", "datatype": "INT32", "shape": [1, 3], "data": [6, 0, 0]}]})
    assert unknown.status == 400


async def test_grpc_v2_and_tf_serving_predict_choose_the_signature(served: Served) -> None:
    service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for value in (3, 4, 5):  # the same header again: a planned request must keep its signature
            request = grpc_infer_request(0, model="multi")
            del request.inputs[:]
            del request.raw_input_contents[:]
            request.inputs.add(name="tokens", datatype="INT32", shape=[1, 3])
            request.raw_input_contents.append(np.array([[value, 0, 0]], np.int32).tobytes())
            request.parameters["signature_name"].string_param = "embed"
            answer = await stub.ModelInfer(request, timeout=10)
            assert [o.name for o in answer.outputs] == ["vector"]
            assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [value, value]
        for _ in range(2):  # the default signature's plan, after the named one's
            answer = await stub.ModelInfer(grpc_infer_request(1.5, model="multi"), timeout=10)
            assert np.frombuffer(answer.raw_output_contents[0], np.float32).tolist() == [1.5]
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=protos.message("tensorflow.serving.PredictResponse")
                                      .FromString)
        response = await predict(tfs_predict_request("multi", signature="embed",
                                                     tokens=np.array([[8, 0, 0]], np.int32)), timeout=10)
        assert response.model_spec.signature_name == "embed"
        assert list(response.outputs["vector"].float_val) == [8.0, 8.0]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await predict(tfs_predict_request("multi", signature="nope", tokens=np.array([[8, 0, 0]], np.int32)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_metadata_lists_every_signature(served: Served) -> None:
    http = served.client("asgi")
    metadata = (await http.get("/v1/models/multi/metadata")).json()
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert list(signatures) == ["serving_default", "embed"]
    assert signatures["embed"]["inputs"]["tokens"]["dtype"] == "DT_INT32"
    assert signatures["embed"]["outputs"]["vector"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""},
                                                                               {"size": "2", "name": ""}]
    assert signatures["serving_default"]["inputs"]["features"]["dtype"] == "DT_FLOAT"


async def test_series_carry_the_signature_only_where_a_model_serves_several(served: Served) -> None:
    http = served.client("asgi")
    assert (await http.post("/v1/models/multi:predict", {"signature_name": "embed", "instances": [[1, 0, 0]] * 3})
            ).status == 200
    assert (await http.post("/v1/models/multi:predict", {"instances": [[1, 0, 0, 0]]})).status == 200
    assert (await http.post("/v1/models/syn:predict", {"instances": [[1, 0, 0, 0]]})).status == 200
    registry = (served.engine.metrics if served.engine is not None else served.app.state.metrics).registry
    inferences = {(s.labels["model"], s.labels["signature"]): s.value for family in registry.collect()
                  for s in family.samples if s.name == "batchserve_inferences_total"}  # the batchers' process's
    # one signature: an empty label, which Prometheus drops
    assert inferences == {("multi", "embed"): 3, ("multi", "serving_default"): 1, ("syn", ""): 1}


async def test_signatures_share_the_instances(served: Served, tmp_path: Path) -> None:
    """One instance: a batch of one signature waits for the instance while another signature's batch runs."""
    gate = tmp_path / "gate"
    repository = served.engine.repository if served.engine is not None else served.app.state.service.repository
    mv = repository.get("multi")
    assert mv.batch_config.max_inflight_batches == 1
    http = served.client("asgi")
    gate.touch()
    embed = asyncio.create_task(http.post("/v1/models/multi:predict", {"signature_name": "embed",
                                                                      "instances": [[7, 0, 0]]}))
    await until(lambda: Path(f"{gate}.held").exists(), "the embed batch held at the gate")
    default = asyncio.create_task(http.post("/v1/models/multi:predict", {"instances": [[2, 0, 0, 0]]}))
    await until(lambda: mv.batchers["serving_default"].inflight_batches == 1, "the default batch sent to the pool")
    gate.unlink()
    answers = await asyncio.gather(embed, default)
    assert [(a.status, a.json()) for a in answers] == [(200, {"predictions": [[7.0, 7.0]]}),
                                                        (200, {"predictions": [[2.0]]})]
