"""The real tritonclient[http] against our server: Triton users' code must work unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from ..reference import direct

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def triton(demo_server):
    client = httpclient.InferenceServerClient(url=demo_server.url.removeprefix("http://"))
    yield client
    client.close()


def test_health_and_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("spam")
    assert not triton.is_model_ready("missing")
    metadata = triton.get_model_metadata("image_classifier")
    assert metadata["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 96, 96, 3]}]
    assert triton.get_server_metadata()["name"] == "batchserve"


@pytest.mark.parametrize("binary", [True, False])
def test_infer_float_binary_and_json(triton, demo_repository, binary):
    images = np.random.default_rng(4).random((3, 96, 96, 3), dtype=np.float32)
    image = httpclient.InferInput("image", list(images.shape), "FP32")
    image.set_data_from_numpy(images, binary_data=binary)
    wanted = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = triton.infer("image_classifier", [image], outputs=[wanted])
    expected = direct(demo_repository / "image_classifier" / "1", image=images)["probabilities"]
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("binary", [True, False])
def test_infer_bytes(triton, binary):
    texts = np.array([b"win a free cruise now", b"are we still meeting at noon"], dtype=object)
    text = httpclient.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(texts, binary_data=binary)
    result = triton.infer("spam", [text], outputs=[httpclient.InferRequestedOutput("label", binary_data=binary)])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
    assert labels == ["spam", "ham"]  # tritonclient gives bytes for binary outputs, str for JSON ones


def test_infer_two_inputs_without_output_selection(triton):
    a = httpclient.InferInput("a", [1, 3], "FP32")
    a.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
    b = httpclient.InferInput("b", [1], "INT32")
    b.set_data_from_numpy(np.array([4], dtype=np.int32), binary_data=False)
    result = triton.infer("two_io", [a, b])
    assert result.as_numpy("total").tolist() == [10.0]
    assert result.as_numpy("doubled").tolist() == [8]


def test_errors_surface_as_triton_exceptions(triton):
    from tritonclient.utils import InferenceServerException

    x = httpclient.InferInput("x", [1, 3], "FP32")
    x.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="dimension 1 must be 4"):
        triton.infer("scale", [x])


def test_model_config_and_statistics(triton):
    config = triton.get_model_config("tabular")
    assert config["max_batch_size"] == 128 and config["platform"] == "tensorflow_savedmodel"
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [32]}]
    assert config["instance_group"][0]["kind"] in ("KIND_CPU", "KIND_GPU")
    rows = httpclient.InferInput("features", [2, 32], "FP32")
    rows.set_data_from_numpy(np.zeros((2, 32), np.float32))
    triton.infer("tabular", [rows])
    [stats] = triton.get_inference_statistics("tabular", "1")["model_stats"]
    assert stats["inference_stats"]["success"]["count"] >= 1 and stats["inference_count"] >= 2
    assert {s["name"] for s in triton.get_inference_statistics()["model_stats"]} >= {"tabular", "spam"}
