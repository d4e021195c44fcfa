"""The real tensorflow-serving-api stubs (PredictionServiceStub, ModelServiceStub) against our gRPC port.

tensorflow-serving-api is installed with --no-deps (its wheel requires the full tensorflow; the
tests' tensorflow-cpu provides the TensorFlow protos its modules import).
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from ..reference import direct

tf = pytest.importorskip("tensorflow")
apis = pytest.importorskip("tensorflow_serving.apis")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)


@pytest.fixture(scope="module")
def channel(demo_server):
    with grpc.insecure_channel(demo_server.grpc_target) as channel:
        yield channel


@pytest.fixture(scope="module")
def prediction(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(model: str, version: int | None = None, label: str = "", signature: str = "",
                    **inputs: object) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label  # version and version_label are one oneof
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value if isinstance(value, type(request.inputs[name]))
                                      else tf.make_tensor_proto(value))
    return request


def test_predict_with_tensor_content_equals_direct_call(prediction, demo_repository):
    rows = np.random.default_rng(7).standard_normal((3, 32)).astype(np.float32)
    request = predict_request("tabular", features=rows)
    assert request.inputs["features"].tensor_content  # make_tensor_proto packs numpy arrays as raw bytes
    response = prediction.Predict(request, timeout=30)
    expected = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["score"]), expected, rtol=1e-5, atol=1e-6)
    assert response.model_spec.name == "tabular" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


def test_predict_with_typed_values(prediction):
    from tensorflow.core.framework import tensor_pb2, types_pb2

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1, 2, 3, 4, 5, 6, 7, 8])
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=4)
    response = prediction.Predict(predict_request("scale", x=tensor))
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[2, 4, 6, 8], [10, 12, 14, 16]]
    assert list(response.outputs["y"].float_val) == [2, 4, 6, 8, 10, 12, 14, 16]  # typed, as TF Serving answers
    one = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[3])  # one value fills the shape
    one.tensor_shape.dim.add(size=1)
    one.tensor_shape.dim.add(size=4)
    assert tf.make_ndarray(prediction.Predict(predict_request("scale", x=one)).outputs["y"]).tolist() == [[6] * 4]


def test_predict_strings_and_output_filter(prediction):
    request = predict_request("spam", text=np.array([b"win a free iphone now", b"lunch at noon?"], dtype=object))
    assert request.inputs["text"].dtype == tf.string.as_datatype_enum
    response = prediction.Predict(request)
    assert sorted(response.outputs) == ["label", "spam_probability"]
    assert list(response.outputs["label"].string_val) == [b"spam", b"ham"]
    request.output_filter.append("label")
    response = prediction.Predict(request)
    assert list(response.outputs) == ["label"]


def test_model_spec_version_label_and_signature(prediction):
    x = np.ones((1, 4), np.float32)
    assert prediction.Predict(predict_request("scale", version=1, x=x)).model_spec.version.value == 1
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request("scale", version=5, x=x))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "has no version 5" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request("scale", label="canary", x=x))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "no version label 'canary'" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request("scale", signature="classify", x=x))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "signature 'classify' is not served" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request("scale", x=np.ones((1, 3), np.float32)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimension 1 must be 4" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request("scale", x=np.ones((1, 4), np.int64)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "expects FP32" in raised.value.details()
    with pytest.raises(grpc.RpcError) as raised:  # a dtype no model here takes: the client's mistake, not UNKNOWN
        prediction.Predict(predict_request("scale", x=np.ones((1, 4), np.complex64)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "DT_COMPLEX64" in raised.value.details()


def test_get_model_metadata(prediction):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "image_classifier"
    request.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(request)
    assert response.model_spec.name == "image_classifier" and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    definition = signatures.signature_def["serving_default"]
    image = definition.inputs["image"]
    assert image.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in image.tensor_shape.dim] == [-1, 96, 96, 3]
    assert [d.size for d in definition.outputs["probabilities"].tensor_shape.dim] == [-1, 10]
    assert definition.method_name == "tensorflow/serving/predict"
    del request.metadata_field[:]
    with pytest.raises(grpc.RpcError) as raised:
        prediction.GetModelMetadata(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_get_model_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "spam"
    (status,) = stub.GetModelStatus(request).model_version_status
    assert status.version == 1 and status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ""
    request.model_spec.name = "missing"
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetModelStatus(request)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_classify_is_unimplemented_with_a_reason(prediction):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "spam"
    with pytest.raises(grpc.RpcError) as raised:
        prediction.Classify(request)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED and "use Predict" in raised.value.details()


def reload_request(*names: str):
    from tensorflow_serving.apis import model_management_pb2

    request = model_management_pb2.ReloadConfigRequest()
    for name in names:
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = name, f"/models/{name}", "tensorflow"
    return request


def test_handle_reload_config_serves_exactly_the_listed_models(start_server, tmp_path):
    import shutil

    from ..observe import synthetic_repository

    repository = synthetic_repository(tmp_path / "repo")
    shutil.copytree(repository / "syn", repository / "other")
    server = start_server(repository, model_control_mode="explicit", load_models="syn", poll_interval=0)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        answer = stub.HandleReloadConfigRequest(reload_request("other"))
        assert answer.status.error_code == 0

        def state(name: str) -> list[tuple[int, int]]:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = name
            try:
                return [(s.version, s.state) for s in stub.GetModelStatus(request).model_version_status]
            except grpc.RpcError as error:
                return [(0, error.code().value[0])]

        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert state("other") == [(1, available)]
        assert state("syn") != [(1, available)]
        with pytest.raises(grpc.RpcError) as raised:
            stub.HandleReloadConfigRequest(reload_request("other", "missing"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "missing" in raised.value.details()
        assert state("other") == [(1, available)]  # refused before anything changed


def test_handle_reload_config_needs_explicit_model_control(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.HandleReloadConfigRequest(reload_request("spam"))
    assert "--model-control-mode explicit" in raised.value.details()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # as the HTTP repository API's 400
