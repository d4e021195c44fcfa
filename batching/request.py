"""One queued request as the batcher keeps it, and the slices of it that go into batches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

from .tensors import Tensors, concat_parts

log = logging.getLogger("batching.batcher")

Delivered = Callable[[Tensors | None, BaseException | None], None]  # (outputs, None) or (None, the error)


class Delivery:
    """A request's settlement handed straight to a callback, in place of its future.

    For a caller that answers from a callback (the in-protocol HTTP path writes each answer from
    here): the outputs reach it as its batch is split, with no future to resolve, no callback
    scheduled per request and no task to wake. It has the few future methods the batcher calls.
    ``cancel`` settles it without a call: whoever cancels answers for it. A callback that raises
    is logged; the batch's other requests are delivered all the same. A subclass may answer in
    ``deliver`` itself, with no callback (one object a request fewer).
    """

    __slots__ = ("_callback", "_done")

    def __init__(self, callback: Delivered | None = None) -> None:
        self._callback = callback
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, outputs: Tensors) -> None:
        self._settle(outputs, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, outputs: Tensors | None, error: BaseException | None) -> None:
        if self._done:
            raise asyncio.InvalidStateError("this delivery is already settled")
        self._done = True
        try:
            self.deliver(outputs, error)
        except Exception:
            log.exception("a request's delivery callback failed")

    def cancel(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._callback = None  # its owner often holds this request: no cycle left for the collector
        return True

    def deliver(self, outputs: Tensors | None, error: BaseException | None) -> None:
        """Called once: ``(outputs, None)`` or ``(None, error)``. Hands them to the callback, then drops it."""
        callback, self._callback = self._callback, None
        if callback is None:
            raise NotImplementedError("a Delivery made without a callback answers in its own deliver")
        callback(outputs, error)


class Request:
    __slots__ = (
        "arrival",
        "deadline",
        "done_rows",
        "future",
        "inputs",
        "key",
        "members",
        "parts",
        "priority",
        "rows",
        "seq",
        "taken",
        "trace",
    )

    def __init__(self, inputs: Tensors, rows: int, key: Hashable, priority: int,
                 deadline: float | None, arrival: float, seq: int,
                 future: asyncio.Future[Tensors] | Delivery, members: int = 1, trace: object = None) -> None:
        self.inputs = inputs
        self.trace = trace  # a sampled request's tracing context (the observer's batch_traced reads it), else None
        self.members = members  # client requests carried (a front end's group), for the observer
        self.rows = rows
        self.key = key
        self.priority = priority
        self.deadline = deadline
        self.arrival = arrival
        self.seq = seq
        self.future = future
        self.taken = 0  # rows already placed in batches
        self.done_rows = 0  # rows whose outputs came back
        self.parts: list[tuple[int, Tensors]] | None = None  # the slices of a request split over batches

    def deliver(self, start: int, rows: int, outputs: Tensors) -> None:
        """Its ``rows`` rows from ``start`` on, of a batch's outputs: settled once every row has come back."""
        self.done_rows += rows
        if rows == self.rows:  # the whole request in one batch, as most are
            if not self.future.done():
                self.future.set_result(outputs)
            return
        parts = self.parts = self.parts or []
        parts.append((start, outputs))
        if self.done_rows == self.rows and not self.future.done():
            parts.sort(key=lambda p: p[0])
            self.future.set_result(concat_parts([p for _, p in parts]))


Segment = tuple[Request, int, int]  # request, first row, row count
