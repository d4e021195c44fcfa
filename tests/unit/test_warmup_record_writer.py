"""The warm-up record demo-models writes for image_jpeg: a tensorflow.serving.PredictionLog whose predict_log holds
the PredictRequest, as TF Serving's warm-up guide writes one."""

from __future__ import annotations

import numpy as np

from server.grpc import protos
from server.grpc.tensors import tf_tensor
from server.tools.warmup_records import predict_log


def _field(data: bytes, number: int) -> bytes:
    """The one length-delimited field ``number`` that makes up ``data`` (tag, varint length, payload)."""
    assert data[0] == number << 3 | 2, f"field {data[0] >> 3} of wire type {data[0] & 7}, not field {number}"
    length = shift = 0
    position = 1
    while True:
        byte = data[position]
        length |= (byte & 0x7F) << shift
        position += 1
        shift += 7
        if byte < 0x80:
            break
    assert len(data) == position + length
    return data[position:]


def test_a_predict_log_holds_the_request_with_its_jpeg():
    jpeg = b"\xff\xd8\xff" + bytes(300) + b"\xff\xd9"  # long enough for a two-byte length
    record = predict_log("image_jpeg", {"image_bytes": [jpeg]})
    request = protos.message("tensorflow.serving.PredictRequest").FromString(_field(_field(record, 6), 1))
    assert (request.model_spec.name, request.model_spec.signature_name) == ("image_jpeg", "")
    assert list(request.inputs) == ["image_bytes"]
    image_bytes = tf_tensor("image_bytes", request.inputs["image_bytes"])
    assert image_bytes.shape == (1,) and image_bytes[0] == jpeg


def test_numeric_inputs_keep_their_dtype():
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
    request = protos.message("tensorflow.serving.PredictRequest").FromString(
        _field(_field(predict_log("image_uint8", {"image": pixels}), 6), 1))
    got = tf_tensor("image", request.inputs["image"])
    assert got.dtype == np.uint8 and np.array_equal(got, pixels)
