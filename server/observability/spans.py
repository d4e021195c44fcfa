"""The spans of a sampled request, its batch and the model's run, made only while tracing is on.

A sampled request's trace, whichever processes it crosses (docs/tracing.md):

- ``infer`` (server kind): the request, from its headers to its answer, a child of the caller's ``traceparent``;
  model, version, signature, protocol, status, the refusal's reason and message, and the rows of the batch it
  ran in;
- ``decode`` and ``encode``: its protocol's two halves (children of ``infer``, in the front end);
- ``queue``: its wait in the batcher's queue (a child of ``infer``, where the batcher runs: the engine);
- ``batch``: the batch it ran in, linked to every sampled request in it and a child of the first of them;
- ``compute``: the model's run of that batch (a child of ``batch``), in the process the model ran in: the
  engine's model thread, or a worker process.

Contexts cross processes as W3C ``traceparent`` strings: the front end's ``Submit`` carries the request span's,
a worker's ``RunBatch`` the batch span's. Each span is built once it has ended, as the SDK's ``ReadableSpan``,
and handed to the process's span processors (tracing.py): the request path makes no tracer, context or sampler
calls, which cost several times more than the span itself.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from server.observability.trace_context import BATCH, Traced, traceparent

# server/core/request.py's InferRequest, and server/observability/tracing.py's Tracing (a process's pipeline),
# not imported: this module is theirs to import, once tracing is on
InferRequest = Any
Tracing = Any

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


def _span_id() -> int:
    return random.getrandbits(64) or 1


def _remote(parent: str) -> SpanContext:
    """The (sampled) span a ``traceparent`` from another process names."""
    return SpanContext(int(parent[3:35], 16), int(parent[36:52], 16), True, _SAMPLED)


def _ago(seconds: float, now: int) -> int:
    return now - int(seconds * 1e9)


def _export(tracing: Tracing, name: str, context: SpanContext, parent: SpanContext | None, start: int, end: int,
            attributes: dict[str, Any] | None = None, kind: SpanKind = SpanKind.INTERNAL, status: Status = _UNSET,
            links: Sequence[Link] = ()) -> None:
    tracing.export(ReadableSpan(name, context, parent, tracing.resource, attributes, (), links, kind, None, status,
                                start, end, tracing.scope))


class RequestTrace(Traced):
    """``request.trace`` of a sampled request: its ``infer`` span, ended by ``finish``."""

    __slots__ = ("caller", "context", "start", "tracing")

    def __init__(self, tracing: Tracing, trace_id: int, caller: SpanContext | None, start: int) -> None:
        state = caller.trace_state if caller is not None else None
        self.context = SpanContext(trace_id, _span_id(), False, _SAMPLED, state)
        super().__init__(traceparent(trace_id, self.context.span_id))
        self.tracing, self.caller, self.start = tracing, caller, start

    @property
    def trace_id(self) -> str:
        return self.parent[3:35]

    @property
    def span_id(self) -> str:
        return self.parent[36:52]

    def child(self, name: str, start: int, error: BaseException | None = None) -> None:
        """A child span from ``start`` (ns since the epoch) to now."""
        status = _UNSET if error is None else Status(StatusCode.ERROR, str(error))
        context = SpanContext(self.context.trace_id, _span_id(), False, _SAMPLED, self.context.trace_state)
        _export(self.tracing, name, context, self.context, start, time.time_ns(), status=status)

    def finish(self, request: InferRequest, code: int, reason: str | None, error: BaseException | None = None,
               elapsed: float | None = None, series: Any = None) -> None:
        """End the ``infer`` span: answered ``code`` (not 200: ``reason``, the error tree's, and the ``error``);
        with the request's ``series`` (server/core/service.py), its trace id the request duration's exemplar."""
        mv = request.mv
        attributes: dict[str, Any] = {
            "batchserve.protocol": request.protocol, "batchserve.model": request.model,
            "batchserve.version": str(mv.version) if mv is not None else str(request.version or ""),
            "batchserve.signature": request.signature or (mv.signature.name if mv is not None and mv.description
                                                          else ""),
            "batchserve.status": code}
        if self.batch_size is not None:
            attributes["batchserve.batch_size"] = self.batch_size
        status = _UNSET
        if reason is not None:
            attributes["batchserve.reason"] = reason
            text = str(error)[:1000] if error is not None else ""
            if text:
                attributes["batchserve.error"] = text
            if code >= 500:  # the server's failure; a client's (4xx) is not an error of this span (semconv)
                status = Status(StatusCode.ERROR, text or None)
        _export(self.tracing, "infer", self.context, self.caller, self.start, time.time_ns(), attributes,
                SpanKind.SERVER, status)
        if series is not None and elapsed is not None:
            series.metrics.exemplar(series.metrics.request_duration, series.labels, elapsed, self.trace_id)


class TracedCodec:
    """A sampled request's codec: its protocol's codec, with a span around each half."""

    __slots__ = ("codec", "trace")

    def __init__(self, codec: Any, request_trace: RequestTrace) -> None:
        self.codec, self.trace = codec, request_trace

    def decode(self, request: InferRequest, mv: Any) -> None:
        start, error = time.time_ns(), None
        try:
            self.codec.decode(request, mv)
        except Exception as failed:
            error = failed
            raise
        finally:
            if request.codec is not self:  # the codec handed the request on (gRPC: a plan's to the general one)
                self.codec, request.codec = request.codec, self
            self.trace.child("decode", start, error)

    def encode(self, request: InferRequest, mv: Any, outputs: Any) -> Any:
        start = time.time_ns()
        try:
            return self.codec.encode(request, mv, outputs)
        finally:
            self.trace.child("encode", start)


def start_request(tracing: Tracing, request: InferRequest, trace_id: int, caller: tuple[int, int, bool] | None,
                  state: str | None) -> None:
    """Sampled ``request``'s span from its arrival (``request.started``), under the caller's span if any."""
    parent = None
    if caller is not None:
        trace_state = TraceState.from_header([state]) if state else None
        parent = SpanContext(caller[0], caller[1], True, TraceFlags(TraceFlags.SAMPLED if caller[2] else 0),
                             trace_state)
    request.trace = RequestTrace(tracing, trace_id, parent, _ago(time.perf_counter() - request.started,
                                                                 time.time_ns()))
    request.codec = TracedCodec(request.codec, request.trace)


def start_batch(tracing: Tracing | None, members: list[tuple[Traced, float | None]], rows: int,
                labels: tuple[str, str, str]) -> Callable[[bool], None]:
    """A batch of ``rows`` rows holding sampled requests starts (on its own task): each member's ``queue`` span
    (those whose first rows it takes: a wait in seconds) and its ``batch`` span, current in the task's context
    (``BATCH``) for the pool that runs it; the callable ends it (its batch ran, or not)."""
    if tracing is None:  # the front end sent traces this process does not export
        return _nothing
    now = time.time_ns()
    parents = [member.context if isinstance(member, RequestTrace) else _remote(member.parent) for member, _ in members]
    for (_, waited), parent in zip(members, parents):
        if waited is not None:
            _export(tracing, "queue", SpanContext(parent.trace_id, _span_id(), False, _SAMPLED), parent,
                    _ago(waited, now), now)
    context = SpanContext(parents[0].trace_id, _span_id(), False, _SAMPLED)
    BATCH.set(traceparent(context.trace_id, context.span_id))
    model, version, signature = labels
    attributes = {"batchserve.model": model, "batchserve.version": version, "batchserve.signature": signature,
                  "batchserve.batch_size": rows}

    def end(ok: bool) -> None:
        status = _UNSET if ok else Status(StatusCode.ERROR, "the batch failed")
        _export(tracing, "batch", context, parents[0], now, time.time_ns(), attributes, status=status,
                links=[Link(parent) for parent in parents])

    return end


def _nothing(ok: bool) -> None:
    pass


def compute_span(tracing: Tracing, parent: str, seconds: float, rows: int) -> None:
    """The model's run of a traced batch, just ended after ``seconds``, in the process it ran in."""
    now = time.time_ns()
    batch = _remote(parent)
    _export(tracing, "compute", SpanContext(batch.trace_id, _span_id(), False, _SAMPLED), batch, _ago(seconds, now),
            now, {"batchserve.batch_size": rows})
