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


DEFAULT_SIGNATURE = "serving_default"  # TF Serving's: what a request without a signature name runs


def choose_signatures(available: list[str], default: str | None, wanted: tuple[str, ...], where: str) -> list[str]:
    """The signatures to serve, the default one first: ``wanted`` (empty: all of ``available``), each of
    which must exist, as ``default`` must when it is named. Unnamed, the default is ``serving_default``
    where it is served, else the first of ``wanted`` (or of ``available``, which is sorted)."""
    missing = [name for name in (*wanted, *([default] if default else [])) if name not in available]
    if missing:
        raise ModelLoadError(f"{where} has no signature {missing[0]!r}; it has {available}")
    names = list(wanted) or available
    if not names:
        raise ModelLoadError(f"{where} has no signatures to serve")
    if default is None:
        default = DEFAULT_SIGNATURE if DEFAULT_SIGNATURE in names else names[0]
    if default not in names:
        raise ModelLoadError(f"signature_name {default!r} is not among the signatures to serve {list(names)}")
    return [default, *(name for name in names if name != default)]


class Model(Protocol):
    """One loaded model instance: runs a batch of one of its signatures synchronously on the calling thread."""

    backend: str
    device: str
    signature: Signature  # the default: what a request without a signature name runs
    signatures: dict[str, Signature]  # every one served, the default first
    batch_sizes: tuple[int, ...] | None  # the only batch sizes it can run (TF-TRT engines), or None for any

    def run(self, inputs: Mapping[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]: ...
