"""TF Serving's warm-up records written for a SavedModel version: ``assets.extra/tf_serving_warmup_requests``, a
TFRecord file of ``tensorflow.serving.PredictionLog`` messages, each a request replayed as the version loads (by TF
Serving, and by batchserve: server/runtime/warmup_records.py reads them). A model whose generated warm-up inputs it
cannot take (a JPEG decoder given empty strings) ships real examples this way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from server.grpc import protos
from server.grpc.tensors import fill_tf_tensor
from server.runtime.warmup_records import RECORDS_PATH


def predict_log(inputs: Mapping[str, np.ndarray], signature: str = "", model: str = "") -> bytes:
    """A serialized PredictionLog holding a PredictRequest of ``inputs`` for ``signature`` ("": the default), as TF
    Serving's warm-up guide writes one with ``tensorflow_serving.apis``."""
    entry = protos.message("tensorflow.serving.PredictionLog")()
    request = entry.predict_log.request
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    for name, arr in inputs.items():
        fill_tf_tensor(request.inputs[name], np.asarray(arr))
    return bytes(entry.SerializeToString())


def write_warmup_records(version: Path, requests: Sequence[Mapping[str, np.ndarray]], model: str = "") -> Path:
    """Write the warm-up records of the version folder ``version``: one PredictionLog per request, framed by
    TensorFlow's own TFRecord writer."""
    import tensorflow as tf

    path = version / RECORDS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for inputs in requests:
            writer.write(predict_log(inputs, model=model))
    return path
