"""Warm-up data files as users make them: TF Serving's PredictionLog records, and warmup_examples."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from server.grpc import protos
from server.grpc.tensors import fill_tf_tensor


def predict_log(inputs: Mapping[str, np.ndarray], signature: str = "") -> bytes:
    """A serialized ``tensorflow.serving.PredictionLog`` holding a PredictRequest for ``signature``, as TF
    Serving's warm-up guide writes one with ``tensorflow_serving.apis``."""
    entry = protos.message("tensorflow.serving.PredictionLog")()
    request = entry.predict_log.request
    request.model_spec.name = "ignored"
    request.model_spec.signature_name = signature
    for name, arr in inputs.items():
        fill_tf_tensor(request.inputs[name], np.asarray(arr))
    return bytes(entry.SerializeToString())


def classify_log() -> bytes:
    """A serialized PredictionLog of the classify kind (batchserve skips it at warm-up)."""
    entry = protos.message("tensorflow.serving.PredictionLog")()
    entry.classify_log.request.model_spec.name = "ignored"
    return bytes(entry.SerializeToString())
