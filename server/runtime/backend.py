"""What every model backend provides, and the error a failed load raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from ..vocabulary import Signature


class ModelLoadError(RuntimeError):
    """A model version could not be loaded; the message says why."""


class WorkerCrashed(RuntimeError):
    """The worker running a batch died; the batch failed and the worker restarts (HTTP 503)."""


class Model(Protocol):
    """One loaded model instance: runs a batch synchronously on the calling thread."""

    backend: str
    device: str
    signature: Signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
