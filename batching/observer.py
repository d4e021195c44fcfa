"""The observer hook: how the batcher reports what it does without knowing who listens.

The metrics layer implements this Protocol; the batcher calls it on its own
task, so implementations must be cheap and must not raise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

RejectReason = Literal["queue_full", "deadline", "cancelled", "closed", "poison", "predicted_late"]


class BatchObserver(Protocol):
    def queue_wait(self, seconds: float, requests: int = 1) -> None:
        """A request's first rows left the queue after waiting this long (``requests``: the client
        requests it carries, more than one when a front end relays a group)."""

    def batch_formed(self, rows: int, padding_rows: int) -> None:
        """A batch of real rows (plus padding up to an allowed size) was dispatched."""

    def batch_computed(self, seconds: float, rows: int, ok: bool) -> None:
        """run_batch finished for a batch of this many real rows."""

    def batch_lost(self, rows: int, attempt: int) -> None:
        """run_batch raised ComputeLost (its worker died or hung) for a batch of this many rows;
        ``attempt`` counts runs of those rows so far (1: the first run, 2: the retry, more: bisection)."""

    def queue_depth(self, rows: int) -> None:
        """Rows waiting in the queue changed to this value."""

    def inflight_batches(self, batches: int) -> None:
        """Batches being computed changed to this value."""

    def rejected(self, reason: RejectReason, rows: int, requests: int = 1) -> None:
        """Rows (of this many client requests) that will never reach the model, and why."""

    def predicted_compute(self, batch_size: int, seconds: float) -> None:
        """The cost model's prediction for a batch of this size changed (sizes: the warm-up sizes)."""

    def batch_traced(self, members: list[tuple[object, float | None]], rows: int) -> Callable[[bool], None]:
        """A batch of ``rows`` rows holding traced requests starts, called on the batch's own task (so what it
        sets in context variables reaches ``run_batch``): each traced member's ``trace`` (what it was queued
        with) and its queue wait in seconds (None when its first rows left in an earlier batch). The callable
        is called once the batch has run (true: it ran)."""


class NullObserver:
    """Observes nothing; the default."""

    def queue_wait(self, seconds: float, requests: int = 1) -> None:
        pass

    def batch_formed(self, rows: int, padding_rows: int) -> None:
        pass

    def batch_computed(self, seconds: float, rows: int, ok: bool) -> None:
        pass

    def batch_lost(self, rows: int, attempt: int) -> None:
        pass

    def queue_depth(self, rows: int) -> None:
        pass

    def inflight_batches(self, batches: int) -> None:
        pass

    def rejected(self, reason: RejectReason, rows: int, requests: int = 1) -> None:
        pass

    def predicted_compute(self, batch_size: int, seconds: float) -> None:
        pass

    def batch_traced(self, members: list[tuple[object, float | None]], rows: int) -> Callable[[bool], None]:
        return _ran


def _ran(ok: bool) -> None:
    pass
