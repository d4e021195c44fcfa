"""TF Serving's warm-up records for a SavedModel version: ``assets.extra/tf_serving_warmup_requests``, a TFRecord
file of ``tensorflow.serving.PredictionLog`` messages, each a request replayed as the version loads (by TF
Serving, and by batchserve). A model whose generated warm-up inputs it cannot take (a JPEG decoder given
empty strings) ships real examples this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from server.grpc import protos
from server.grpc.tensors import fill_tf_tensor

RECORDS_PATH = Path("assets.extra") / "tf_serving_warmup_requests"
_PREDICT_LOG, _REQUEST = 6, 1  # PredictionLog.predict_log and PredictLog.request (tensorflow_serving/apis)


def _field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field."""
    head, length = bytearray([number << 3 | 2]), len(data)
    while length > 0x7F:
        head.append(length & 0x7F | 0x80)
        length >>= 7
    head.append(length)
    return bytes(head) + data


def predict_log(model: str, inputs: Mapping[str, Sequence[Any] | np.ndarray], signature: str = "") -> bytes:
    """A serialized PredictionLog holding one PredictRequest for ``model`` (strings as object arrays)."""
    request = protos.message("tensorflow.serving.PredictRequest")()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, values in inputs.items():
        arr = values if isinstance(values, np.ndarray) else np.asarray(values, dtype=object)
        fill_tf_tensor(request.inputs[name], arr)
    return _field(_PREDICT_LOG, _field(_REQUEST, request.SerializeToString()))


def write_warmup_record(version: Path, model: str, inputs: Mapping[str, Sequence[Any] | np.ndarray]) -> Path:
    """Write the warm-up records file of the version folder ``version``: one request of ``inputs``."""
    import tensorflow as tf

    path = version / RECORDS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(predict_log(model, inputs))
    return path
