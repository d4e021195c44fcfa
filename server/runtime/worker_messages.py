"""Messages between a process worker pool and its worker processes, one class each (over a socket, per batch).

Tensors are in the pool's shared-memory blocks (``server.runtime.process_worker``), placed as
``server.ipc.layout`` says (as in a front end's arena); a message names the blocks and carries the layout, and
string tensors, which have no fixed-size layout, ride in the message itself.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from server.core.vocabulary import Signature
from server.ipc.layout import Layout


class RunBatch(NamedTuple):
    """Run one batch: its numeric inputs are in block ``inputs`` at ``layout``; write the outputs to ``outputs``."""

    inputs: str
    outputs: str
    layout: Layout
    objects: dict[str, np.ndarray]  # string inputs
    signature: str | None = None  # the signature to run (None: the default)
    trace: str | None = None  # a traced batch's span (W3C traceparent): the run is its compute span; else None


class Stop(NamedTuple):
    """Exit after the batch in hand."""


class WarmupRecord(NamedTuple):
    """What a worker's warm-up ran (each batch as ``warmup_key`` names it) and its slowest batch's seconds: kept by
    the worker, so an engine that adopts it (server/runtime/worker_home.py) need not warm it up again."""

    ran: frozenset[tuple[object, ...]]
    rejected: frozenset[tuple[object, ...]]
    slowest_s: float | None


class Warmed(NamedTuple):
    """The pool warmed this worker up: keep the record and hand it to the next engine that adopts the worker."""

    record: WarmupRecord


class Ready(NamedTuple):
    """The model loaded: what the pool reports as the version's description."""

    signatures: dict[str, Signature]  # every one served, the default first
    backend: str
    batch_sizes: tuple[int, ...] | None
    warmed: WarmupRecord | None = None  # an adopted worker's warm-up, as the engine before told it


class LoadFailed(NamedTuple):
    """The model could not load (or the worker could not start), with the reason as a person reads it."""

    reason: str


class BatchDone(NamedTuple):
    """A batch's outputs: numeric ones in the output block at ``layout`` (empty when they did not fit
    and ride in ``objects`` instead), the block size they need, and the model's seconds."""

    layout: Layout
    objects: dict[str, np.ndarray]
    needed: int
    seconds: float


class BatchFailed(NamedTuple):
    """The model raised on this batch; the worker itself is fine."""

    error_type: str
    text: str
    traceback: str


ToWorker = RunBatch | Warmed | Stop  # pool -> worker
FromWorker = Ready | LoadFailed | BatchDone | BatchFailed  # worker -> pool
