"""A sampled request's tracing context as it crosses the batcher and the processes, without the SDK.

W3C ``traceparent`` strings carry a span's context from the front end to the engine (``Submit``) and from the
engine to a worker (``RunBatch``); ``Traced`` is what a sampled request hands its batcher (``Measured``: a request
only logged, whose line reads its batch's numbers); ``BATCH`` names the
batch span of the batch a task runs. The runtime and the engine import these; only server/observability/spans.py
imports the OpenTelemetry SDK.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z")
_HEX_DASH = b"0123456789abcdef-"
_ODD = b"13579bdf"
_ZERO_TRACE, _ZERO_SPAN = b"0" * 32, b"0" * 16


def valid_traceparent(value: str | bytes) -> bytes | None:
    """A W3C ``traceparent`` header's bytes when it is a valid one, else None (the request then starts a trace of
    its own, as the spec asks). Version 00's four fields of lower-case hex are checked without a regex."""
    raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
    if len(raw) == 55 and raw[2] == raw[35] == raw[52] == 45 and raw.count(b"-") == 3 \
            and not raw.translate(None, _HEX_DASH):
        valid = raw[:2] != b"ff"
    else:  # a later version's (more fields), or not a traceparent
        match = _TRACEPARENT.match(raw.decode("latin-1"))
        valid = match is not None and match[1] not in ("00", "ff") and bool(match[5])
    return raw if valid and raw[3:35] != _ZERO_TRACE and raw[36:52] != _ZERO_SPAN else None


def sampled(raw: bytes) -> bool:
    """A valid traceparent's sampled flag (the flags' lowest bit)."""
    return raw[54] in _ODD


def ids(raw: bytes) -> tuple[int, int]:
    """A valid traceparent's trace id and parent span id."""
    return int(raw[3:35], 16), int(raw[36:52], 16)


def parse_traceparent(value: str | bytes) -> tuple[int, int, bool] | None:
    """W3C ``traceparent`` as (trace id, parent span id, sampled); None when it is not a valid one."""
    raw = valid_traceparent(value)
    return None if raw is None else (*ids(raw), sampled(raw))


def traceparent(trace_id: int, span_id: int) -> str:
    """A sampled span's W3C ``traceparent``: how its context crosses to the engine and the workers."""
    return f"00-{trace_id:032x}-{span_id:016x}-01"


class Measured:
    """What a request sampled for a request line hands its batcher (``ticket.trace``), also when it is not traced:
    set by its batch (the observer's ``batch_traced``), its queue wait, its batch's compute seconds and rows, and
    read for its line (server/observability/access_log.py). A request that is not sampled hands None: no cost."""

    __slots__ = ("batch_size", "compute_s", "queue_s")

    def __init__(self) -> None:
        self.batch_size: int | None = None
        self.queue_s: float | None = None  # None: its first rows left in a batch before (only its last is told)
        self.compute_s: float | None = None


class Traced(Measured):
    """What a sampled request hands its batcher (``ticket.trace``): its span's ``traceparent``, which the batch
    links to and its queue span continues, and its batch's numbers (``Measured``), set by the batch."""

    __slots__ = ("parent",)

    def __init__(self, parent: str) -> None:
        super().__init__()
        self.parent = parent


BatchNumbers = tuple[int | None, float | None, float | None]  # (batch size, queue seconds, compute seconds)


def on_wire(measured: Measured | None) -> str | None:
    """``Submit.trace`` for what a request hands its batcher: a traced one's ``traceparent``, "" for one only
    logged (its numbers come back), None for neither."""
    return None if measured is None else measured.parent if isinstance(measured, Traced) else ""


def off_wire(trace: str | None) -> Measured | None:
    """What the engine queues a ``Submit`` with (``on_wire``'s inverse)."""
    return None if trace is None else Traced(trace) if trace else Measured()


def numbers(measured: Any) -> BatchNumbers | None:
    """``Result.batch``: what a measured request's batch told it, for the front end (``measured``: a ticket's
    ``trace``, a ``Measured`` or None: not measured)."""
    return None if measured is None else (measured.batch_size, measured.queue_s, measured.compute_s)


def told(measured: Measured, batch: BatchNumbers | None) -> None:
    """Set ``measured`` to what its batch told the engine (``numbers``), or to another's (a group's)."""
    if batch is not None:
        measured.batch_size, measured.queue_s, measured.compute_s = batch


def measure_batch(members: list[tuple[Measured, float | None]], rows: int) -> list[tuple[Traced, float | None]]:
    """A batch of ``rows`` rows starts with these measured members (and their queue waits, None when their first
    rows left before): each is told its batch's rows and its wait; the traced ones, for their spans."""
    traced = []
    for member, waited in members:
        member.batch_size = rows
        if waited is not None:
            member.queue_s = waited
        if isinstance(member, Traced):
            traced.append((member, waited))
    return traced


def batch_timer(members: list[tuple[Measured, float | None]], end: Callable[[bool], None] | None
                ) -> Callable[[bool], None]:
    """The callable the batcher calls once the batch has run: each member is told the batch's compute seconds
    (from now), then ``end`` (its spans') is called."""
    started = time.perf_counter()

    def ran(ok: bool) -> None:
        seconds = time.perf_counter() - started
        for member, _ in members:
            member.compute_s = seconds
        if end is not None:
            end(ok)

    return ran


# The traceparent of the batch span of the batch this task runs (set by spans.start_batch on the batch's own
# task): the worker pools read it to record the model's run under it.
BATCH: ContextVar[str | None] = ContextVar("batchserve_batch_span", default=None)

