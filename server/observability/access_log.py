"""Request lines: a sampled access line per answered request, and errors and refusals by reason, rate-limited.

``InferenceService`` calls ``RequestLog.record`` once per request, where it accounts it; admission calls
``refused`` for what it turns away before a request is read. Which requests get a line:

- a failed or refused one (any status but 200 and 499): the first of its (status, reason) in each
  ``error_log_interval_s``, with how many of the same went unlogged since the last line (``suppressed``);
- any other: a share ``access_log_sample`` of them, drawn at random when it is queued (``draw``; one that
  leaves before, when it is answered), so that its batch tells it its numbers. At 0 (the default, as uvicorn's
  access log was off by default) the cost is a comparison or two; nothing is built.

A logged request gets a request id: the caller's ``x-request-id`` (HTTP header or gRPC metadata), else one
generated; it is set on the request (``request_id``) and the front end returns it in ``x-request-id``. A
request that is not logged gets none and costs none: its headers are only read for a line.

The line is logger ``batchserve.access``'s record with ``fields``: request_id, model, version, signature,
protocol, status, reason, total_ms, error (its message), suppressed; a request that ran in a batch has its
queue_ms (its wait in the batcher's queue), compute_ms (its batch's compute) and batch_size (that batch's rows:
a front end's group shares it), told by the batch (server/observability/trace_context.py's ``Measured``, across
the engine link in ``Result.batch``); with tracing on, a sampled request's line has its trace_id and span_id
(its ``infer`` span's, docs/tracing.md) too (server/observability/logs.py writes them as JSON keys or
key=value text).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from random import random
from typing import Any, TypeVar

from server.core.errors import classify, message
from server.core.request import InferRequest
from server.observability.trace_context import Measured

log = logging.getLogger("batchserve.access")
REQUEST_ID = "x-request-id"
MAX_ID_CHARS = 128  # a caller's id is cut to this in lines and answers: a header cannot grow the log without bound
_KEYS = (REQUEST_ID, REQUEST_ID.encode())
R = TypeVar("R")


def caller_id(headers: Any) -> str | None:
    """The caller's ``x-request-id`` among ``headers``: (lower-case name, value) pairs as HTTP (bytes) or gRPC
    metadata (str) has them, or a callable returning them."""
    if callable(headers):
        headers = headers()
    for name, value in headers or ():
        if name in _KEYS:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            return text[:MAX_ID_CHARS] or None
    return None


class RequestLog:
    """Decides which requests get a line and writes it; one per service (its settings' sample and interval)."""

    def __init__(self, sample: float, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.sample = sample
        self.interval = interval
        self._clock = clock
        self._next: dict[tuple[int, str], float] = {}  # (status, reason) -> when its next line may be written
        self._suppressed: dict[tuple[int, str], int] = {}

    def record(self, request: InferRequest, code: int, elapsed: float, error: BaseException | None = None) -> None:
        """One request answered with ``code`` after ``elapsed`` seconds (``error``: why it failed)."""
        if error is None or code == 499:
            line = request.line
            if line is None:  # not drawn when queued (the default, sample 0; or it left before)
                sample = self.sample
                if not sample or random() >= sample:
                    return
            elif line is False:
                return
            self._write(request, code, elapsed, error, None, logging.INFO)
            return
        reason = classify(error).reason
        suppressed = self._gate(code, reason)
        if suppressed is not None:
            self._write(request, code, elapsed, error, suppressed, _level(code))

    def draw(self, request: InferRequest) -> Measured | None:
        """As ``request`` is queued: whether an answer gets a line (``request.line``); what it hands its batcher to
        be told its batch's numbers (its trace when traced: that is told them too)."""
        if random() < self.sample:
            request.line = request.trace if request.trace is not None else Measured()
            return request.line  # type: ignore[no-any-return]
        request.line = False
        return request.trace  # type: ignore[no-any-return]

    def refused(self, error: BaseException, request: InferRequest | None = None, model: str | None = None) -> None:
        """A request turned away before it was read (a token, a rate, bytes in flight, overload)."""
        info = classify(error)
        suppressed = self._gate(info.status, info.reason)
        if suppressed is None:
            return
        if request is None:
            fields = {"model": model, "status": info.status, "reason": info.reason, "error": message(error),
                      "suppressed": suppressed}
            log.log(_level(info.status), "request refused: %s", info.reason, extra={"fields": fields})
        else:
            self._write(request, info.status, None, error, suppressed, _level(info.status), refused=True)

    def _gate(self, code: int, reason: str) -> int | None:
        """None while ``(code, reason)`` had a line within the interval (counted), else how many it held back."""
        key = (code, reason)
        now = self._clock()
        if now < self._next.get(key, 0.0):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._next[key] = now + self.interval
        return self._suppressed.pop(key, 0)

    def _write(self, request: InferRequest, code: int, elapsed: float | None, error: BaseException | None,
               suppressed: int | None, level: int, refused: bool = False) -> None:
        """The line; an id for the request, unless it is refused (its answer, made once per cause, names none)."""
        request_id = request.request_id or caller_id(request.headers)
        if not refused:
            request_id = request.request_id = request_id or uuid.uuid4().hex  # the front end answers with it
        mv = request.mv
        version = mv.version if mv is not None else request.version  # resolved, else as asked
        signature = request.signature or (mv.signature.name if mv is not None and mv.description is not None else None)
        reason = classify(error).reason if error is not None else None
        fields: dict[str, Any] = {
            "request_id": request_id, "model": request.model, "version": None if version is None else str(version),
            "signature": signature, "label": request.label, "protocol": request.protocol, "status": code,
            "reason": reason, "total_ms": _ms(elapsed)}
        if error is not None:
            fields["error"] = message(error)
        measured = request.line
        if isinstance(measured, Measured) and measured.batch_size is not None:  # it ran in a batch
            fields["queue_ms"], fields["compute_ms"] = _ms(measured.queue_s), _ms(measured.compute_s)
            fields["batch_size"] = measured.batch_size
        if request.trace is not None:  # sampled for tracing: the line finds its trace
            fields["trace_id"], fields["span_id"] = request.trace.trace_id, request.trace.span_id
        if suppressed is not None:
            fields["suppressed"] = suppressed
        text = "request" if error is None else f"request {'refused' if refused else 'failed'}: {reason}"
        log.log(level, text, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _level(code: int) -> int:
    """5xx are the server's to look at (500: the model failed); 4xx are the callers'."""
    return logging.ERROR if code == 500 else logging.WARNING if code >= 500 else logging.INFO


def tagged(reply: R, request_id: str) -> R:
    """An HTTP reply (a dataclass with ``headers``) answering with ``x-request-id``."""
    headers = getattr(reply, "headers", None) or {}
    return replace(reply, headers={**headers, REQUEST_ID: request_id})  # type: ignore[type-var]
