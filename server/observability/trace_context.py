"""A sampled request's tracing context as it crosses the batcher and the processes, without the SDK.

W3C ``traceparent`` strings carry a span's context from the front end to the engine (``Submit``) and from the
engine to a worker (``RunBatch``); ``Traced`` is what a sampled request hands its batcher; ``BATCH`` names the
batch span of the batch a task runs. The runtime and the engine import these; only server/observability/spans.py
imports the OpenTelemetry SDK.
"""

from __future__ import annotations

import re
from contextvars import ContextVar

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


class Traced:
    """What a sampled request hands its batcher (``ticket.trace``): its span's ``traceparent``, which the batch
    links to and its queue span continues, and the rows of the batch it ran in, set by the batch."""

    __slots__ = ("batch_size", "parent")

    def __init__(self, parent: str) -> None:
        self.parent = parent
        self.batch_size: int | None = None


def batch_rows(trace: object) -> int | None:
    """The rows of the batch a request ran in, when it was sampled (``trace``: what it was queued with)."""
    return trace.batch_size if isinstance(trace, Traced) else None


# The traceparent of the batch span of the batch this task runs (set by spans.start_batch on the batch's own
# task): the worker pools read it to record the model's run under it.
BATCH: ContextVar[str | None] = ContextVar("batchserve_batch_span", default=None)

