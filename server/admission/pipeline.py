"""Admission: whether a request may be served, the same for every entry (HTTP in-protocol, HTTP ASGI, gRPC).

In order: the bearer token and its scope (and model), the token's request rate, the bytes in flight,
then the front end's lag against the model's SLO and the rate it admits while answers come late.
Each refusal is counted once in ``batchserve_rejected_total`` by its reason (the error tree's,
server/core/errors.py) and comes back as a ``Refusal``: gRPC answers its error as a status, HTTP
writes its reply. Without a tokens file, a rate limit, ``max_inflight_bytes`` or ``overload_share``,
the step is skipped.
"""

from __future__ import annotations

from typing import Any

from server.admission.auth import HEALTH, AuthError, TokenEntry
from server.admission.limits import InflightBytes, InflightFull, RateLimited
from server.admission.overload import FLOOR, LoopLag
from server.core.errors import classify
from server.core.request import InferRequest
from server.core.service import InferenceService, Refusal
from server.settings import Settings


class Admission:
    """Built once per front end from the app's state (``auth``, ``rate``, ``inflight``, ``loop_lag``,
    ``settings``, ``metrics``, and ``service`` once the lifespan has started)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.settings: Settings = state.settings
        self.tokens = getattr(state, "auth", None)  # a TokenFile (reloaded in place), or None
        self.rate = getattr(state, "rate", None)
        self.inflight: InflightBytes | None = getattr(state, "inflight", None)
        self.loop_lag: LoopLag | None = getattr(state, "loop_lag", None)
        self._service: InferenceService | None = None

    @property
    def service(self) -> InferenceService:
        service = self._service
        if service is None:  # read once it exists: the lifespan makes it once, and never replaces it
            service = self._service = self.state.service
        return service

    def serving(self) -> bool:
        """Whether the lifespan has made the service yet (before, uvicorn's own path answers)."""
        if self._service is None:
            self._service = getattr(self.state, "service", None)
        return self._service is not None

    def token(self, token: str | None, scope: str | None, model: str | None
              ) -> tuple[Refusal | None, TokenEntry | None]:
        """The token's check for a route needing ``scope`` (None: open) and ``model``: a refusal, or the
        entry that passed (None when nothing is checked)."""
        if self.tokens is None or scope is None:
            return None, None
        try:
            entry = self.tokens.authorize(token, scope, model)
        except AuthError as error:
            presented = token is not None
            return self._refused(error, model, {"WWW-Authenticate": 'Bearer realm="batchserve", '
                                                'error="invalid_token"' if presented else 'Bearer realm="batchserve"'}
                                 if classify(error).status == 401 else None), None
        rate = self.rate
        if rate is not None and scope != HEALTH and not rate.allow(entry.digest):
            return self._refused(RateLimited(f"this token has used its {rate.rate:g} requests a second "
                                             "(auth_rate_limit); retry shortly"), model), None
        return None, entry

    def admit(self, request: InferRequest, token: str | None, size: int = 0, hold: float = 0.0) -> Refusal | None:
        """An inference request's whole admission before its body is decoded: None to serve it (with
        ``size`` bytes reserved in flight until ``release``), else its refusal. ``hold``: how long a lag
        counts (gRPC reads a call some turns before its handler runs)."""
        if self.tokens is not None:
            refusal, entry = self.token(token, "infer", request.model)
            if refusal is not None:
                return _traced(request, refusal)
            request.caller = entry.digest if entry is not None else None
        if size and not self.reserve(size):
            return self.inflight_full(request)
        lag = self.loop_lag.behind(hold) if self.loop_lag is not None else 0.0
        service = self.service
        if lag > FLOOR or service.limiting:
            refusal = service.overloaded(request, lag)
            if refusal is not None:
                self.release(size)
                return _traced(request, refusal)
        return None

    def reserve(self, size: int, own: int = 0) -> bool:
        """Count ``size`` request bytes in flight, of a request holding ``own`` already (always true without
        ``max_inflight_bytes``)."""
        return self.inflight is None or self.inflight.reserve(size, own)

    def release(self, size: int) -> None:
        if size and self.inflight is not None:
            self.inflight.release(size)

    def inflight_full(self, request: InferRequest) -> Refusal:
        """The refusal of a request whose body would pass ``max_inflight_bytes`` (before it, or as a
        chunked body arrives), counted."""
        inflight = self.inflight
        assert inflight is not None
        return _traced(request, self._refused(InflightFull(f"this front end holds {inflight.used >> 20} MiB of "
                                                           f"request bodies (max_inflight_bytes={inflight.limit}); "
                                                           "retry shortly"), request.model))

    def _refused(self, error: Exception, model: str | None, headers: dict[str, str] | None = None) -> Refusal:
        service = getattr(self.state, "service", None)
        if model is None:
            label = ""
        elif service is not None and model in service.repository.names():
            label = model
        else:
            label = "_unknown"  # never a name from the request: labels stay low-cardinality
        self.state.metrics.rejected.labels(label, "", classify(error).reason).inc()
        if service is not None:
            service.request_log.refused(error, model=label or None)
        return Refusal.of(error, headers)


def _traced(request: InferRequest, refusal: Refusal) -> Refusal:
    """``refusal``, which ends a sampled request's span (saying why)."""
    if request.trace is not None:
        info = classify(refusal.error)
        request.trace.finish(request, info.status, info.reason, refusal.error)
    return refusal
