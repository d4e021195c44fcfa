"""One request through the server, whatever its protocol: resolve, validate, batch, account.

The protocol modules parse and encode; everything between (and every metric
on the request path) lives here, so both protocols behave the same.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from starlette.responses import Response

from server.admission.overload import Overloaded, too_late
from server.admission.rate import AdmissionRate, LateAnswers
from server.core.errors import classify, error_parts
from server.core.vocabulary import validate_inputs
from server.models.repository import ModelCatalog, ModelVersion
from server.observability.metrics import Metrics, incrementer, observer
from server.settings import Settings


@dataclass
class RequestContext:
    """Filled in by a protocol handler as it goes, so errors are counted against the right version."""

    model_version: ModelVersion | None = None


@dataclass
class Reply:
    """A response before any web framework sees it: the HTTP front ends write it as they like."""

    body: bytes
    headers: Mapping[str, str] | None = None
    media_type: str = "application/json"
    status: int = 200

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, self.media_type)


BodyReader = Callable[[], Awaitable[bytes]]
T = TypeVar("T")


def error_reply(error: BaseException) -> Reply:
    status, body, headers = error_parts(error)
    return Reply(body, headers, status=status)


_JUDGED = frozenset(("good", "late", "expired"))  # outcomes that tell whether admitted requests are answered in time


class _RequestSeries:
    """Pre-bound metric children for one (model, version, protocol)."""

    __slots__ = ("admission", "codes", "labels", "metrics", "observe", "slo", "slo_counters")

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

    def count(self, code: int) -> None:
        inc = self.codes.get(code)
        if inc is None:
            inc = self.codes[code] = incrementer(self.metrics.requests.labels(*self.labels, str(code)))
        inc(1)

    def record(self, code: int, outcome: str | None, elapsed: float) -> None:
        """One request answered with ``code`` after ``elapsed`` seconds; ``outcome`` None: good or late."""
        self.count(code)
        self.observe(elapsed)
        if outcome is None:
            outcome = "good" if elapsed <= self.slo else "late"
        self.slo_counters[outcome](1)
        if self.admission is not None and outcome in _JUDGED:
            now = time.perf_counter()
            self.admission.answered(outcome == "good", now, now - elapsed)


@dataclass(frozen=True)
class Overload:
    """A refusal for an overloaded front end, made once per model version and protocol: the error (gRPC
    answers it as a status), its HTTP reply, and the counters it goes to."""

    error: Overloaded
    reply: Reply
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
        self._refusals: dict[tuple[str, str, int, float, bool], Overload] = {}
        self._admission: dict[tuple[str, str], AdmissionRate] = {}
        self.limiting = 0  # how many model versions' admitted rate is limited now (checked on every request)

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
        return self._series_for(mv.name, str(mv.version), protocol, mv)

    async def predict(self, mv: ModelVersion, inputs: Mapping[str, np.ndarray], *,
                      timeout: float | None = None, priority: int = 0) -> dict[str, np.ndarray]:
        """Validate against the version's signature and await this request's rows of a batch."""
        checked = validate_inputs(mv.signature, inputs)
        assert mv.batcher is not None
        return await mv.batcher.submit(checked, timeout=timeout, priority=priority)

    def overloaded(self, protocol: str, model: str, version: str | int | None, label: str | None,
                   lag: float) -> Overload | None:
        """The refusal for a request of ``model`` while the front end runs ``lag`` seconds behind, when
        that is too far behind its SLO (server/admission/overload.py) or the request is over the rate admitted
        while the version's answers come late (server/admission/rate.py), counted; None to serve it.
        Called before its body is read: unknown models and versions are left to the handler's own answer."""
        try:
            mv = self.repository.get(model, version, label)
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
        key = (protocol, mv.name, mv.version, budget, behind)
        refusal = self._refusals.get(key)
        if refusal is None:  # one reply and counters per version: under overload this is the hot path
            error = Overloaded(
                f"the server is overloaded: it runs more than {share:g} of model {mv.name!r}'s SLO budget "
                f"({budget * 1e3:g} ms) behind; retry later") if behind else LateAnswers(
                f"the server is overloaded: model {mv.name!r}'s answers came late, so it lets through only "
                "part of its requests; retry later")
            reason = "overloaded" if behind else "admitted_rate"
            refusal = self._refusals[key] = Overload(
                error, error_reply(error), incrementer(self.metrics.rejected.labels(mv.name, str(mv.version),
                                                                                    reason)),
                self.series(protocol, mv))
        refusal.count(1)
        refusal.series.record(503, "rejected", 0.0)  # not an answer: never judged by the admitted rate
        return refusal

    async def respond(self, protocol: str, model: str,
                      handler: Callable[[RequestContext], Awaitable[Reply]]) -> Reply:
        """Run a protocol handler; map its errors; count the request once, whatever happens."""
        try:
            return await self.run(protocol, model, handler)
        except Exception as error:  # counted by run
            return error_reply(error)

    async def run(self, protocol: str, model: str, handler: Callable[[RequestContext], Awaitable[T]]) -> T:
        """``respond`` for front ends that map errors themselves (gRPC): counted the same, the error re-raised."""
        started = time.perf_counter()
        context = RequestContext()
        try:
            result = await handler(context)
        except asyncio.CancelledError:
            self.cancelled(protocol, model, context.model_version, started)
            raise
        except Exception as error:
            self.failed(protocol, model, context.model_version, error, started)
            raise
        self._account(protocol, model, context.model_version, 200, None, started)
        return result

    def cancelled(self, protocol: str, model: str, mv: ModelVersion | None, started: float) -> None:
        """Count a request the client cancelled (499), as ``run`` does (for handlers that count themselves)."""
        self._account(protocol, model, mv, 499, "cancelled", started)

    def failed(self, protocol: str, model: str, mv: ModelVersion | None, error: Exception,
               started: float) -> None:
        """Count a failed request by its error's status, as ``run`` does (for handlers that count themselves)."""
        info = classify(error)
        if info.reason in ("invalid", "not_ready"):
            self._reject(model, info.reason)
        outcome = {504: "expired", 500: "error", 499: "cancelled"}.get(info.status, "rejected")
        self._account(protocol, model, mv, info.status, outcome, started)

    def _reject(self, model: str, reason: str) -> None:
        label = model if model in self.repository.names() else "_unknown"
        self.metrics.rejected.labels(label, "", reason).inc()

    def _account(self, protocol: str, model: str, mv: ModelVersion | None, code: int, outcome: str | None,
                 started: float) -> None:
        if mv is not None:
            name, version = mv.name, str(mv.version)
        else:
            name, version = (model if model in self.repository.names() else "_unknown"), ""
        self._series_for(name, version, protocol, mv).record(code, outcome, time.perf_counter() - started)
