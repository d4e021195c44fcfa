"""One request through the server, whatever its protocol: resolve, decode, validate, batch, encode, account.

``InferenceService.infer`` takes an InferRequest (server/core/request.py) from any entry and runs
everything between its protocol's decode and encode, and every metric on the request path, once;
``overloaded`` is admission's SLO step (server/admission/pipeline.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.responses import Response

from batching import Batcher, Delivery, Ticket
from server.admission.overload import Overloaded, too_late
from server.admission.rate import AdmissionRate, LateAnswers
from server.core.errors import classify, error_parts
from server.core.request import InferRequest, batcher_priority, check_names, served_signature
from server.core.vocabulary import validate_inputs
from server.models.catalog import BatchQueue, ModelCatalog, ModelVersion
from server.observability.access_log import RequestLog
from server.observability.metrics import Metrics, incrementer, observer
from server.observability.model_stats import VersionStats
from server.settings import Settings


@dataclass
class Reply:
    """A response before any web framework sees it: the HTTP front ends write it as they like."""

    body: bytes
    headers: Mapping[str, str] | None = None
    media_type: str = "application/json"
    status: int = 200

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, self.media_type)


def error_reply(error: BaseException) -> Reply:
    status, body, headers = error_parts(error)
    return Reply(body, headers, status=status)


_JUDGED = frozenset(("good", "late", "expired"))  # outcomes that tell whether admitted requests are answered in time


class _RequestSeries:
    """Pre-bound metric children for one (model, version, protocol)."""

    __slots__ = ("admission", "codes", "labels", "metrics", "observe", "slo", "slo_counters", "stats")

    def __init__(self, metrics: Metrics, model: str, version: str, protocol: str, slo: float) -> None:
        # updated on the event loop's thread only: lock-free values, no wrapper checks (server/observability/metrics.py)
        self.metrics = metrics
        self.labels = (model, version, protocol)
        self.observe = observer(metrics.request_duration.labels(model, version, protocol))
        self.codes: dict[int, Callable[[float], None]] = {}
        self.slo = slo
        self.slo_counters = {o: incrementer(metrics.slo_requests.labels(model, version, o))
                             for o in ("good", "late", "rejected", "expired", "cancelled", "error")}
        self.admission: AdmissionRate | None = None  # scheduling: slo: this version's admitted-rate limit
        self.stats = metrics.stats.setdefault((model, version), VersionStats()) if version else None

    def record(self, code: int, outcome: str | None, elapsed: float) -> None:
        """One request answered with ``code`` after ``elapsed`` seconds; ``outcome`` None: good or late."""
        count = self.codes.get(code)
        if count is None:
            count = self.codes[code] = incrementer(self.metrics.requests.labels(*self.labels, str(code)))
        count(1)
        self.observe(elapsed)
        if outcome is None:
            outcome = "good" if elapsed <= self.slo else "late"
        self.slo_counters[outcome](1)
        if self.admission is not None and outcome in _JUDGED:
            now = time.perf_counter()
            self.admission.answered(outcome == "good", now, now - elapsed)


@dataclass(frozen=True)
class Refusal:
    """A request turned away before it is read or queued: the error (gRPC answers it as a status) and
    its HTTP reply, made once per cause where refusals are the hot path (an overloaded front end)."""

    error: Exception
    reply: Reply

    @classmethod
    def of(cls, error: Exception, headers: Mapping[str, str] | None = None) -> Refusal:
        reply = error_reply(error)
        if headers is not None:
            reply = Reply(reply.body, headers, status=reply.status)
        return cls(error, reply)


Answered = Callable[[Any, BaseException | None], None]  # (the protocol's answer, None) or (None, the error)


class Pending(Protocol):
    """A request ``start``ed and not yet answered: ``cancel`` when its client leaves."""

    def cancel(self) -> Any: ...


class _Queued(Delivery):
    """A ``start``ed request in a Batcher's queue or batch: the batcher's delivery of its outputs (encoded,
    counted and answered here), and its cancel. What it refers to is dropped once it is settled: its owner
    (a connection's cycle) refers to it, and the collector then finds no cycle."""

    __slots__ = ("answered", "queue", "request", "service", "ticket")

    def __init__(self, service: InferenceService, request: InferRequest, queue: Batcher, answered: Answered) -> None:
        super().__init__()
        self.service, self.request, self.queue = service, request, queue
        self.answered: Answered | None = answered
        self.ticket: Ticket | None = None  # set once queued (enqueue never delivers before it returns)

    def deliver(self, outputs: dict[str, Any] | None, error: BaseException | None) -> None:
        answered, request, service = self.answered, self.request, self.service
        self.answered = self.ticket = None
        assert answered is not None
        if outputs is not None:
            try:
                assert request.mv is not None  # resolved by _prepare
                answer = request.codec.encode(request, request.mv, outputs)
            except Exception as failure:
                error = failure
            else:
                service._account(request, 200, None)
                answered(answer, None)
                return
        assert error is not None
        service.failed(request, error)
        answered(None, error)

    def cancel(self) -> bool:
        """Its client left (or the batcher cancels it): it leaves the queue, counted cancelled, never answered."""
        if not super().cancel():
            return False
        ticket, self.answered, self.ticket = self.ticket, None, None
        if ticket is not None:
            self.queue.cancel(ticket)  # a settled future is not cancelled again
            self.service.cancelled(self.request)
        return True


class _Answered:
    """A request answered before it was queued (refused, invalid): nothing to cancel."""

    def cancel(self) -> None:
        pass


_ANSWERED = _Answered()


@dataclass(frozen=True)
class _Overload:
    refusal: Refusal
    count: Callable[[float], None]
    series: _RequestSeries


class InferenceService:
    """Runs requests against the repository and keeps the request-path metrics."""

    def __init__(self, repository: ModelCatalog, metrics: Metrics, settings: Settings) -> None:
        self.repository = repository
        self.metrics = metrics
        self.settings = settings
        self.draining = False
        self._series: dict[tuple[str, str, str], _RequestSeries] = {}
        self._by_version: dict[tuple[str, str, int], _RequestSeries] = {}
        self._refusals: dict[tuple[str, str, int, float, bool], _Overload] = {}
        self._admission: dict[tuple[str, str], AdmissionRate] = {}
        self.limiting = 0  # how many model versions' admitted rate is limited now (checked on every request)
        self.request_log = RequestLog(settings.access_log_sample, settings.error_log_interval_s)
        self._sample = settings.access_log_sample  # read per request: 0, the access log off, costs nothing

    def _series_for(self, model: str, version: str, protocol: str, mv: ModelVersion | None) -> _RequestSeries:
        key = (model, version, protocol)
        series = self._series.get(key)
        if series is None:
            slo_ms = (mv.config.slo_ms if mv is not None else None) or self.settings.slo_ms
            series = self._series[key] = _RequestSeries(self.metrics, model, version, protocol, slo_ms / 1000.0)
            series.admission = self._admission_for(model, version, mv)
        return series

    def _admission_for(self, model: str, version: str, mv: ModelVersion | None) -> AdmissionRate | None:
        """The admitted-rate limit of a ``scheduling: slo`` version (one for all protocols), else None."""
        config = mv.batch_config if mv is not None else None
        share = self.settings.admission_late_share
        if config is None or config.scheduling != "slo" or share <= 0:
            return None
        admission = self._admission.get((model, version))
        if admission is None:
            gauge = self.metrics.admitted_rate_limit.labels(model, version)

            def changed(old: float, new: float) -> None:
                self.limiting += (new != math.inf) - (old != math.inf)
                gauge.set(0.0 if new == math.inf else new)

            admission = self._admission[(model, version)] = AdmissionRate(
                share, time.perf_counter(), changed, self.settings.admission_window_ms / 1000.0,
                self.settings.admission_late_windows)
        return admission

    def series(self, protocol: str, mv: ModelVersion) -> _RequestSeries:
        """The request-path metrics of ``mv`` over ``protocol`` (a hot path may keep them)."""
        key = (protocol, mv.name, mv.version)
        series = self._by_version.get(key)
        if series is None:
            series = self._by_version[key] = self._series_for(mv.name, str(mv.version), protocol, mv)
        return series

    def overloaded(self, request: InferRequest, lag: float) -> Refusal | None:
        """The refusal for ``request`` while the front end runs ``lag`` seconds behind, when that is too far
        behind its version's SLO (server/admission/overload.py) or the request is over the rate admitted
        while the version's answers come late (server/admission/rate.py), counted; None to serve it.
        Resolves the version (kept on the request); unknown models and versions are left to ``infer``."""
        mv = request.mv
        if mv is None:
            try:
                mv = request.mv = self.repository.get(request.model, request.version, request.label)
            except Exception:
                return None
        config = mv.batch_config
        if config is None or config.scheduling != "slo" or config.slo is None:
            return None
        budget = config.slo - config.slo_reserve
        share = self.settings.overload_share
        behind = too_late(lag, budget, share)
        if not behind:
            admission = self._admission.get((mv.name, str(mv.version)))
            if admission is None or not admission.limiting or admission.admit(time.perf_counter()):
                return None
        key = (request.protocol, mv.name, mv.version, budget, behind)
        overload = self._refusals.get(key)
        if overload is None:  # one reply and counters per version: under overload this is the hot path
            error = Overloaded(
                f"the server is overloaded: it runs more than {share:g} of model {mv.name!r}'s SLO budget "
                f"({budget * 1e3:g} ms) behind; retry later") if behind else LateAnswers(
                f"the server is overloaded: model {mv.name!r}'s answers came late, so it lets through only "
                "part of its requests; retry later")
            reason = classify(error).reason
            overload = self._refusals[key] = _Overload(
                Refusal.of(error), incrementer(self.metrics.rejected.labels(mv.name, str(mv.version), reason)),
                self.series(request.protocol, mv))
        overload.count(1)
        overload.series.record(503, "rejected", 0.0)  # not an answer: never judged by the admitted rate
        self.request_log.refused(overload.refusal.error, request)
        return overload.refusal

    async def infer(self, request: InferRequest) -> Any:
        """Resolve the version (unless admission has), decode, validate, queue, encode: the protocol's
        answer. Counted once, whatever happens; an error is re-raised for the front end to answer."""
        try:
            queue, inputs, priority, trace = self._prepare(request)
        except Exception as error:
            self.failed(request, error)
            raise
        return await self._submit(request, queue, inputs, priority, trace)

    async def _submit(self, request: InferRequest, queue: BatchQueue, inputs: Mapping[str, Any], priority: int,
                      trace: Any) -> Any:
        try:
            outputs = await queue.submit(inputs, timeout=request.timeout, priority=priority, trace=trace)
            assert request.mv is not None  # resolved by _prepare
            answer = request.codec.encode(request, request.mv, outputs)
        except asyncio.CancelledError:
            self.cancelled(request)
            raise
        except Exception as error:
            self.failed(request, error)
            raise
        self._account(request, 200, None)
        return answer

    def start(self, request: InferRequest, answered: Answered) -> Pending:
        """``infer`` for a caller that answers from a callback (the in-protocol HTTP path): ``answered(answer,
        None)`` or ``(None, error)`` is called once, counted as ``infer`` counts; ``cancel()`` on what it
        returns (its client left) counts it cancelled instead. A version batched here takes its rows with
        no task and no future (``Batcher.enqueue``); one batched elsewhere (a front end's engine) is awaited
        in a task."""
        try:
            queue, inputs, priority, trace = self._prepare(request)
            if not isinstance(queue, Batcher):
                submitted = self._submit_then(request, answered, queue, inputs, priority, trace)
                return asyncio.get_running_loop().create_task(submitted)
            queued = _Queued(self, request, queue, answered)
            queued.ticket = queue.enqueue(inputs, timeout=request.timeout, priority=priority, trace=trace,
                                          delivered=queued)
            return queued
        except Exception as error:
            self.failed(request, error)
            answered(None, error)
            return _ANSWERED

    async def _submit_then(self, request: InferRequest, answered: Answered, queue: BatchQueue,
                           inputs: Mapping[str, Any], priority: int, trace: Any) -> None:
        try:
            answer = await self._submit(request, queue, inputs, priority, trace)
        except Exception as error:  # counted by _submit
            answered(None, error)
        else:
            answered(answer, None)

    def _prepare(self, request: InferRequest) -> tuple[BatchQueue, Mapping[str, Any], int, Any]:
        """Everything before the queue: resolve, decode, validate; the version's queue for the request, its
        inputs, the batcher's priority and what the batcher reports to (a traced or logged request's)."""
        mv = request.mv
        if mv is None or not mv.ready or self.repository.version(mv.name, mv.version) is not mv:
            # resolved here, or again if the version admission resolved was retired while the body arrived
            mv = request.mv = self.repository.get(request.model, request.version, request.label)
        request.codec.decode(request, mv)
        inputs = request.inputs
        assert inputs is not None and mv.batch_config is not None
        if not request.checked:
            signature = served_signature(request, mv) if request.signature else mv.signature
            if request.outputs:
                check_names(request, signature)
            inputs = validate_inputs(signature, inputs)
        priority = request.priority
        if priority:
            priority = batcher_priority(priority, mv.batch_config.priority_levels)
        trace = request.trace
        if self._sample:  # drawn for a line: told its batch's numbers (as a traced request is)
            trace = self.request_log.draw(request)
        return mv.queue(request.signature), inputs, priority, trace

    def cancelled(self, request: InferRequest) -> None:
        """Count ``request`` cancelled: its client left before the answer."""
        self._account(request, 499, "cancelled")

    def failed(self, request: InferRequest, error: BaseException) -> None:
        """Count ``request`` failed with ``error`` (by its status), wherever it failed: in ``infer``, or
        reading its body before."""
        info = classify(error)
        if info.reason in ("invalid", "not_ready"):
            label = request.model if request.model in self.repository.names() else "_unknown"
            self.metrics.rejected.labels(label, "", info.reason).inc()
        outcome = {504: "expired", 500: "error", 499: "cancelled"}.get(info.status, "rejected")
        self._account(request, info.status, outcome, error)

    def _account(self, request: InferRequest, code: int, outcome: str | None, error: BaseException | None = None
                 ) -> None:
        mv = request.mv
        elapsed = time.perf_counter() - request.started
        if mv is not None:
            series = self.series(request.protocol, mv)
            series.stats.answered(code == 200, elapsed)  # type: ignore[union-attr]  # a version's: never None
        else:
            name = request.model if request.model in self.repository.names() else "_unknown"
            series = self._series_for(name, "", request.protocol, None)
        series.record(code, outcome, elapsed)
        if error is not None or self._sample:  # else no line: not drawn, the access log off
            self.request_log.record(request, code, elapsed, error)
        if request.trace is not None:  # sampled: its span ends, its trace id an exemplar
            reason = "cancelled" if code == 499 else None if error is None else classify(error).reason
            request.trace.finish(request, code, reason, error, elapsed, series)
