"""TF Serving's gRPC API (PredictionService, ModelService) against our gRPC port, called as
tensorflow-serving-api's stubs call it: the same method paths and messages, here the classes of the server's
embedded descriptors (tests/payloads.py), so no tensorflow-serving-api is needed. TensorFlow (which the demo
models need) packs the tensors a TF client sends and reads the answers' tensors.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from server.grpc import protos

from ..payloads import grpc_method, tfs_dtype
from ..payloads import tfs_predict_request as predict_request
from ..reference import direct

tf = pytest.importorskip("tensorflow")

Msg = protos.message
AVAILABLE = Msg("tensorflow.serving.ModelVersionStatus").AVAILABLE


@pytest.fixture
async def channel(demo_server):
    async with grpc.aio.insecure_channel(demo_server.grpc_target) as channel:
        yield channel


@pytest.fixture
def predict(channel):
    return grpc_method(channel, protos.PREDICTION_SERVICE, "Predict")


async def test_predict_with_tensor_content_equals_direct_call(predict, demo_repository):
    rows = np.random.default_rng(7).standard_normal((3, 32)).astype(np.float32)
    request = predict_request("tabular", features=tf.make_tensor_proto(rows))
    assert request.inputs["features"].tensor_content  # make_tensor_proto packs numpy arrays as raw bytes
    response = await predict(request, timeout=30)
    expected = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["score"]), expected, rtol=1e-5, atol=1e-6)
    assert response.model_spec.name == "tabular" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


async def test_predict_with_typed_values(predict):
    tensor = Msg("tensorflow.TensorProto")(dtype=tfs_dtype("DT_FLOAT"), float_val=[1, 2, 3, 4, 5, 6, 7, 8])
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=4)
    response = await predict(predict_request("scale", x=tensor))
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2, 4, 6, 8], [10, 12, 14, 16]]
    assert list(response.outputs["y"].float_val) == [2, 4, 6, 8, 10, 12, 14, 16]  # typed, as TF Serving answers
    one = Msg("tensorflow.TensorProto")(dtype=tfs_dtype("DT_FLOAT"), float_val=[3])  # one value fills the shape
    one.tensor_shape.dim.add(size=1)
    one.tensor_shape.dim.add(size=4)
    assert tf.make_ndarray((await predict(predict_request("scale", x=one))).outputs["y"]).tolist() == [[6] * 4]


async def test_predict_strings_and_output_filter(predict):
    text = tf.make_tensor_proto(np.array([b"win a free iphone now", b"lunch at noon?"], dtype=object))
    request = predict_request("spam", text=text)
    assert request.inputs["text"].dtype == tf.string.as_datatype_enum
    response = await predict(request)
    assert sorted(response.outputs) == ["label", "spam_probability"]
    assert list(response.outputs["label"].string_val) == [b"spam", b"ham"]
    request.output_filter.append("label")
    response = await predict(request)
    assert list(response.outputs) == ["label"]


async def test_model_spec_version_label_and_signature(predict):
    x = np.ones((1, 4), np.float32)
    assert (await predict(predict_request("scale", version=1, x=x))).model_spec.version.value == 1
    with pytest.raises(grpc.RpcError) as raised:
        await predict(predict_request("scale", version=5, x=x))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "has no version 5" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        await predict(predict_request("scale", label="canary", x=x))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "no version label 'canary'" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        await predict(predict_request("scale", signature="classify", x=x))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature 'classify' is not served" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        await predict(predict_request("scale", x=np.ones((1, 3), np.float32)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimension 1 must be 4" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        await predict(predict_request("scale", x=np.ones((1, 4), np.int64)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expects FP32" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:  # a dtype no model here takes: the client's mistake, not UNKNOWN
        await predict(predict_request("scale", x=np.ones((1, 4), np.complex64)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "DT_COMPLEX64" in raised.value.details()


async def test_get_model_metadata(channel):
    metadata = grpc_method(channel, protos.PREDICTION_SERVICE, "GetModelMetadata")
    request = Msg("tensorflow.serving.GetModelMetadataRequest")()
    request.model_spec.name = "image_classifier"
    request.metadata_field.append("signature_def")
    response = await metadata(request)
    assert response.model_spec.name == "image_classifier" and response.model_spec.version.value == 1
    signatures = Msg("tensorflow.serving.SignatureDefMap")()
    assert response.metadata["signature_def"].Unpack(signatures)
    definition = signatures.signature_def["serving_default"]
    image = definition.inputs["image"]
    assert image.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 96, 96, 3]
    assert [d.size for d in definition.outputs["probabilities"].tensor_shape.dim] == [-1, 10]
    assert definition.method_name == "tensorflow/serving/predict"
    del request.metadata_field[:]
    with pytest.raises(grpc.RpcError) as raised:
        await metadata(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_model_status(channel):
    model_status = grpc_method(channel, protos.MODEL_SERVICE, "GetModelStatus")
    request = Msg("tensorflow.serving.GetModelStatusRequest")()
    request.model_spec.name = "spam"
    (status,) = (await model_status(request)).model_version_status
    assert status.version == 1 and status.state == AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""
    request.model_spec.name = "missing"
    with pytest.raises(grpc.RpcError) as raised:
        await model_status(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_classify_is_unimplemented_with_a_reason(channel):
    request = Msg("tensorflow.serving.ClassificationRequest")()
    request.model_spec.name = "spam"
    with pytest.raises(grpc.RpcError) as raised:
        await grpc_method(channel, protos.PREDICTION_SERVICE, "Classify")(request)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED and "use Predict" in raised.value.details()


def reload_request(*names: str):
    request = Msg("tensorflow.serving.ReloadConfigRequest")()
    for name in names:
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, f"/models/{name}", "tensorflow"
    return request


async def test_handle_reload_config_serves_exactly_the_listed_models(start_server, tmp_path):
    import shutil

    from ..observe import synthetic_repository

    repository = synthetic_repository(tmp_path / "repo")
    shutil.copytree(repository / "syn", repository / "other")
    server = start_server(repository, model_control_mode="explicit", load_models="syn", poll_interval=0)
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        reload = grpc_method(channel, protos.MODEL_SERVICE, "HandleReloadConfigRequest")
        model_status = grpc_method(channel, protos.MODEL_SERVICE, "GetModelStatus")
        answer = await reload(reload_request("other"))
        assert answer.status.error_code == 0

        async def state(name: str) -> list[tuple[int, int]]:
            request = Msg("tensorflow.serving.GetModelStatusRequest")()
            request.model_spec.name = name
            try:
                return [(s.version, s.state) for s in (await model_status(request)).model_version_status]
            except grpc.RpcError as error:
                return [(0, error.code().value[0])]

        assert await state("other") == [(1, AVAILABLE)]
        assert await state("syn") != [(1, AVAILABLE)]
        with pytest.raises(grpc.RpcError) as raised:
            await reload(reload_request("other", "missing"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "missing" in raised.value.details()
        assert await state("other") == [(1, AVAILABLE)]  # refused before anything changed


async def test_handle_reload_config_needs_explicit_model_control(channel):
    with pytest.raises(grpc.RpcError) as raised:
        await grpc_method(channel, protos.MODEL_SERVICE, "HandleReloadConfigRequest")(reload_request("spam"))
    assert "--model-control-mode explicit" in raised.value.details()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # as the HTTP repository API's 400
