"""The demo image models that take what cameras and image services send: uint8 pixels (the model casts) and JPEG
bytes (the model decodes and resizes), end to end over binary V2 and TF Serving's b64 rows, answered as a direct
call of the same SavedModel answers; image_jpeg warmed up with the JPEG of its TF Serving warm-up records."""

from __future__ import annotations

import base64
import struct

import httpx
import numpy as np
import pytest

from ..payloads import binary_body, split_binary
from ..reference import direct

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_repository(tmp_path_factory):
    from server.tools.demo_models import build_demo_models

    root = tmp_path_factory.mktemp("image_models")
    build_demo_models(root, ["image_uint8", "image_jpeg"])
    return root


@pytest.fixture(scope="module")
def http(image_repository, tmp_path_factory):
    from ..servers import ServerProcess

    server = ServerProcess(image_repository, tmp_path_factory.mktemp("logs") / "images.log", poll_interval=0,
                           max_queue_delay_ms=2)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            yield client
    finally:
        server.stop()


def jpegs() -> list[bytes]:
    import tensorflow as tf

    from server.tools.demo_models import example_photo

    return [tf.io.encode_jpeg(example_photo(size, seed), quality=85).numpy() for size, seed in ((128, 0), (200, 1))]


def binary_infer(http, model: str, name: str, datatype: str, shape: list[int], raw: bytes) -> np.ndarray:
    body, headers = binary_body({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                             "parameters": {"binary_data_size": len(raw)}}],
                                 "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}, raw)
    response = http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    header, data = split_binary(response)
    return np.frombuffer(data, np.float32).reshape(header["outputs"][0]["shape"])


def test_both_warm_up_completely(http):
    """image_jpeg's warm-up replays the real JPEG of its records (assets.extra): generated empty strings are no JPEG."""
    complete = {line.split('model="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
                for line in http.get("/metrics").text.splitlines()
                if line.startswith("batchserve_model_warmup_complete{")}
    assert complete == {"image_uint8": 1.0, "image_jpeg": 1.0}


def test_uint8_pixels_over_binary_v2(http, image_repository):
    assert http.get("/v2/models/image_uint8").json()["inputs"] == [
        {"name": "image", "datatype": "UINT8", "shape": [-1, 96, 96, 3]}]
    pixels = np.random.default_rng(3).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    got = binary_infer(http, "image_uint8", "image", "UINT8", [2, 96, 96, 3], pixels.tobytes())
    expected = direct(image_repository / "image_uint8" / "1", image=pixels)["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_jpeg_bytes_over_binary_v2_and_tfserving_b64(http, image_repository):
    assert http.get("/v2/models/image_jpeg").json()["inputs"] == [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [-1]}]
    images = jpegs()  # two sizes: the graph resizes each to 96x96
    expected = direct(image_repository / "image_jpeg" / "1", image_bytes=np.array(images, dtype=object))
    raw = b"".join(struct.pack("<I", len(image)) + image for image in images)
    got = binary_infer(http, "image_jpeg", "image_bytes", "BYTES", [2], raw)
    np.testing.assert_allclose(got, expected["probabilities"], rtol=1e-5, atol=1e-6)
    rows = {"instances": [{"b64": base64.b64encode(image).decode()} for image in images]}
    predictions = http.post("/v1/models/image_jpeg:predict", json=rows).json()["predictions"]
    np.testing.assert_allclose(np.array(predictions), expected["probabilities"], rtol=1e-5, atol=1e-6)


def test_bytes_that_are_no_jpeg_get_a_clear_error_and_the_model_serves_on(http):
    response = http.post("/v2/models/image_jpeg/infer", json={
        "inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": ["not a jpeg"]}]})
    assert response.status_code == 400  # TensorFlow's InvalidArgumentError: the input's fault
    assert "Unknown image file format" in response.json()["error"]
    assert binary_infer(http, "image_jpeg", "image_bytes", "BYTES", [1],
                        struct.pack("<I", len(jpegs()[0])) + jpegs()[0]).shape == (1, 10)
