"""The real tritonclient.grpc against our gRPC port: Triton users' gRPC code must work unchanged.

Outputs are compared with direct SavedModel calls; typed ``contents`` (which tritonclient never
sends) are sent through Triton's own generated stub.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest

from ..reference import direct

grpcclient = pytest.importorskip("tritonclient.grpc")
grpcaio = pytest.importorskip("tritonclient.grpc.aio")
service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def triton(demo_server):
    client = grpcclient.InferenceServerClient(url=demo_server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(demo_server):
    with grpc.insecure_channel(demo_server.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_health_metadata_and_config(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("spam")
    assert triton.is_model_ready("spam", "1")
    assert not triton.is_model_ready("missing")
    assert not triton.is_model_ready("spam", "7")
    metadata = triton.get_model_metadata("image_classifier", as_json=True)
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": ["-1", "96", "96", "3"]}]
    assert metadata["versions"] == ["1"] and metadata["platform"] == "tensorflow_savedmodel"
    server = triton.get_server_metadata(as_json=True)
    assert server["name"] == "batchserve" and "binary_tensor_data" in server["extensions"]
    config = triton.get_model_config("tabular", as_json=True)["config"]
    assert config["name"] == "tabular" and config["max_batch_size"] == 128  # the demo model.yaml's
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == "1000"
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": ["32"]}]
    index = triton.get_model_repository_index(as_json=True)["models"]
    assert {(m["name"], m["version"], m["state"]) for m in index} >= {("spam", "1", "READY"),
                                                                       ("tabular", "1", "READY")}


def test_infer_image_equals_direct_call(triton, demo_repository):
    images = np.random.default_rng(4).random((3, 96, 96, 3), dtype=np.float32)
    image = grpcclient.InferInput("image", list(images.shape), "FP32")
    image.set_data_from_numpy(images)
    result = triton.infer("image_classifier", [image], outputs=[grpcclient.InferRequestedOutput("probabilities")],
                          request_id="r-7")
    expected = direct(demo_repository / "image_classifier" / "1", image=images)["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-4, atol=1e-6)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("image_classifier", "1", "r-7")


def test_infer_bytes(triton):
    texts = np.array([b"win a free cruise now", b"are we still meeting at noon"], dtype=object)
    text = grpcclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(texts)
    result = triton.infer("spam", [text])
    assert result.as_numpy("label").tolist() == [b"spam", b"ham"]
    assert result.as_numpy("spam_probability").shape == (2,)


def test_infer_two_inputs_and_requested_outputs(triton):
    a = grpcclient.InferInput("a", [2, 3], "FP32")
    a.set_data_from_numpy(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32))
    b = grpcclient.InferInput("b", [2], "INT32")
    b.set_data_from_numpy(np.array([4, -1], dtype=np.int32))
    every = triton.infer("two_io", [a, b])
    assert every.as_numpy("total").tolist() == [10.0, 14.0]
    assert every.as_numpy("doubled").tolist() == [8, -2]
    only = triton.infer("two_io", [a, b], outputs=[grpcclient.InferRequestedOutput("doubled")])
    assert [o.name for o in only.get_response().outputs] == ["doubled"]
    assert only.as_numpy("doubled").tolist() == [8, -2]


def test_typed_contents_are_answered_with_typed_contents(stub, demo_repository):
    rows = np.random.default_rng(5).standard_normal((2, 32)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="tabular")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 32])
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    response = stub.ModelInfer(request)
    assert not response.raw_output_contents
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("score", "FP32", [2, 1])
    expected = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(np.array(output.contents.fp32_contents).reshape(2, 1), expected, rtol=1e-5, atol=1e-6)

    strings = service_pb2.ModelInferRequest(model_name="spam")
    text = strings.inputs.add(name="text", datatype="BYTES", shape=[1])
    text.contents.bytes_contents.append(b"claim your free prize now")
    labels = {o.name: o for o in stub.ModelInfer(strings).outputs}["label"]
    assert list(labels.contents.bytes_contents) == [b"spam"]


def _rows(value: float, rows: int) -> grpcclient.InferInput:
    features = grpcclient.InferInput("features", [rows, 32], "FP32")
    features.set_data_from_numpy(np.full((rows, 32), value, dtype=np.float32))
    return features


@pytest.mark.parametrize(("model", "inputs", "code", "fragment"), [
    ("tabular", lambda: [_wrong_width()], grpc.StatusCode.INVALID_ARGUMENT,
     "dimension 1 must be 32"),
    ("missing", lambda: [_rows(1, 1)], grpc.StatusCode.NOT_FOUND, "model 'missing' is not in the repository"),
    ("tabular", lambda: [_wrong_dtype()], grpc.StatusCode.INVALID_ARGUMENT, "expects FP32"),
    ("tabular", lambda: [_wrong_name()], grpc.StatusCode.INVALID_ARGUMENT, "missing input 'features'"),
])
def test_errors_are_status_codes_with_the_http_messages(triton, model, inputs, code, fragment):
    with pytest.raises(InferenceServerException) as raised:
        triton.infer(model, inputs())
    assert raised.value.status() == str(code)
    assert fragment in raised.value.message()


def _wrong_width() -> grpcclient.InferInput:
    x = grpcclient.InferInput("features", [1, 31], "FP32")
    x.set_data_from_numpy(np.zeros((1, 31), np.float32))
    return x


def _wrong_dtype() -> grpcclient.InferInput:
    x = grpcclient.InferInput("features", [1, 32], "INT32")
    x.set_data_from_numpy(np.zeros((1, 32), np.int32))
    return x


def _wrong_name() -> grpcclient.InferInput:
    x = grpcclient.InferInput("feature", [1, 32], "FP32")
    x.set_data_from_numpy(np.zeros((1, 32), np.float32))
    return x


def test_unknown_version_output_and_raw_size_are_rejected(stub):
    request = service_pb2.ModelInferRequest(model_name="tabular", model_version="9")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(np.zeros(32, np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "has no version 9" in raised.value.details()
    request.model_version = ""
    request.outputs.add(name="nope")
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown output 'nope'" in raised.value.details()
    del request.outputs[:]
    request.raw_input_contents[0] = b"\0" * 12
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs 128 bytes, got 12" in raised.value.details()


def test_statistics_count_calls_and_streaming_is_unimplemented(triton, stub):
    before = triton.get_inference_statistics("tabular", as_json=True)["model_stats"][0]["inference_stats"]
    triton.infer("tabular", [_rows(1.0, 3)])
    [stats] = triton.get_inference_statistics("tabular", "1", as_json=True)["model_stats"]
    success = stats["inference_stats"]["success"]
    assert int(success["count"]) == int(before.get("success", {}).get("count", 0)) + 1 and int(success["ns"]) > 0
    assert int(stats["inference_count"]) >= 3 and stats["batch_stats"]
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.ModelStreamInfer(iter([service_pb2.ModelInferRequest(model_name="tabular")])))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED and "use ModelInfer" in raised.value.details()


async def test_two_hundred_concurrent_calls_get_their_own_rows(demo_server, demo_repository):
    rows = np.random.default_rng(6).standard_normal((200, 32)).astype(np.float32)
    expected = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    client = grpcaio.InferenceServerClient(url=demo_server.grpc_target)
    try:
        async def one(i: int) -> np.ndarray:
            features = grpcaio.InferInput("features", [1, 32], "FP32")
            features.set_data_from_numpy(rows[i : i + 1])
            return (await client.infer("tabular", [features])).as_numpy("score")

        answers = await asyncio.gather(*(one(i) for i in range(200)))
    finally:
        await client.close()
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer, expected[i : i + 1], rtol=1e-5, atol=1e-6, err_msg=f"row {i}")


@pytest.mark.parametrize("method", ["/inference.GRPCInferenceService/ModelInfer",
                                    "/tensorflow.serving.PredictionService/Predict"])
def test_bytes_that_are_not_the_message_are_invalid_argument_not_unknown(demo_server, method):
    with grpc.insecure_channel(demo_server.grpc_target) as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(method)(b"\xff\xff\xff not a protobuf message", timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a valid" in raised.value.details()
