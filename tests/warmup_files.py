"""Warm-up data files as users make them: TF Serving's PredictionLog records, and warmup_examples."""

from __future__ import annotations

from server.grpc import protos
from server.tools.warmup_writer import predict_log

__all__ = ["classify_log", "predict_log"]


def classify_log() -> bytes:
    """A serialized PredictionLog of the classify kind (batchserve skips it at warm-up)."""
    entry = protos.message("tensorflow.serving.PredictionLog")()
    entry.classify_log.request.model_spec.name = "ignored"
    return bytes(entry.SerializeToString())
