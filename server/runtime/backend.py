"""What every model backend provides, and the error a failed load raises."""

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


class Model(Protocol):
    """One loaded model instance: runs a batch synchronously on the calling thread."""

    backend: str
    device: str
    signature: Signature
    batch_sizes: tuple[int, ...] | None  # the only batch sizes it can run (TF-TRT engines), or None for any

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
