"""What every model backend provides, the errors a failed load or batch raises, and when a batch counts as hung."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from batching import ComputeLost
from server.core.vocabulary import Signature


class ModelLoadError(RuntimeError):
    """A model version could not be loaded; the message says why."""


class WorkerCrashed(ComputeLost):
    """The worker running a batch died; the worker restarts, and the batcher runs the batch again
    (``retry_on_worker_crash``) before any request sees this (HTTP 503)."""


class WorkerHung(WorkerCrashed):
    """The batch ran past its time limit (``batch_timeout_ms``): its worker was killed and restarts."""


MIN_BATCH_TIMEOUT_S = 5.0
WARMUP_FACTOR = 10.0
UNWARMED_BATCH_TIMEOUT_S = 60.0  # no warm-up timings to go by


def batch_timeout(configured: float | None, slowest_warmup: float | None) -> float:
    """Seconds a batch may compute before its worker is treated as hung: ``batch_timeout_ms`` from model.yaml,
    else a generous multiple of the slowest warm-up batch (which includes tracing, so it is already slower than
    steady state), never below a floor that rides out a busy machine."""
    if configured is not None:
        return configured
    if slowest_warmup is None:
        return UNWARMED_BATCH_TIMEOUT_S
    return max(MIN_BATCH_TIMEOUT_S, WARMUP_FACTOR * slowest_warmup)


class Model(Protocol):
    """One loaded model instance: runs a batch synchronously on the calling thread."""

    backend: str
    device: str
    signature: Signature
    batch_sizes: tuple[int, ...] | None  # the only batch sizes it can run (TF-TRT engines), or None for any

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
