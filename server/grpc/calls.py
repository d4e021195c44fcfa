"""What every gRPC handler shares: the app's state, the bearer-token check, and failures as statuses.

Authorization is checked here, inside each handler, and not in a server interceptor: a token may be
limited to some models, and the model is named in the request message, which only the handler has
parsed (an interceptor would parse every message twice). Health and reflection, which name no model,
are checked by ``server/grpc/server.py``'s interceptor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from server.admission.auth import HEALTH, AuthError, bearer
from server.admission.limits import RateLimited
from server.admission.overload import FLOOR, GRPC_HOLD, LoopLag
from server.core.errors import classify
from server.core.service import InferenceService, RequestContext
from server.grpc.status import grpc_error
from server.settings import Settings

PROTOCOL = "grpc"
T = TypeVar("T")
# The request's deadline is the call's, this much earlier: the server then answers DEADLINE_EXCEEDED itself
# (counted as expired, with its message) instead of racing gRPC's own cancellation at the same instant.
DEADLINE_MARGIN = 0.001


class Malformed:
    """What the deserializer gives for bytes that are not the method's message (answered INVALID_ARGUMENT:
    left to gRPC, a parse error would be UNKNOWN)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def call_timeout(context: grpc.aio.ServicerContext, timeout: float | None = None) -> float | None:
    """The request's timeout in seconds: the earlier of the call's gRPC deadline and ``timeout``."""
    remaining = context.time_remaining()
    if remaining is None:
        return timeout
    remaining = max(remaining - DEADLINE_MARGIN, 1e-6)
    return remaining if timeout is None or remaining < timeout else timeout


def token_of(metadata: Any) -> str | None:
    """The bearer token of a call's ``authorization`` metadata, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            return bearer(value)
    return None


class Calls:
    """Built once per server from the FastAPI app's state (``service``, ``settings``, ``metrics``, ``auth``)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.settings: Settings = state.settings
        self.tokens = getattr(state, "auth", None)  # a TokenFile (reloaded in place), or None: nothing is checked
        self.loop_lag: LoopLag | None = getattr(state, "loop_lag", None)  # None: overload_share 0

    @property
    def service(self) -> InferenceService:
        return self.state.service  # type: ignore[no-any-return]

    def refused(self, metadata: Any, scope: str, model: str | None) -> Exception | None:
        """None when the call may go on; else the refusal (AuthError, or RateLimited for a token over
        ``auth_rate_limit``, one budget with its HTTP requests), counted in batchserve_rejected_total as HTTP's."""
        tokens = self.tokens
        if tokens is None or (scope == HEALTH and not getattr(self.settings, "auth_health", False)):
            return None
        refusal: Exception
        try:
            entry = tokens.authorize(token_of(metadata), scope, model)
        except AuthError as error:
            refusal = error
        else:
            rate = getattr(self.state, "rate", None)
            if rate is None or scope == HEALTH or rate.allow(entry.digest):
                return None
            refusal = RateLimited(f"this token has used its {rate.rate:g} requests a second (auth_rate_limit); "
                                  "retry shortly")
        if model is None:
            label = ""
        else:  # never a name from the request: labels stay low-cardinality
            label = model if model in self.service.repository.names() else "_unknown"
        self.state.metrics.rejected.labels(label, "", classify(refusal).reason).inc()
        return refusal

    async def authorize(self, context: grpc.aio.ServicerContext, scope: str, model: str | None = None) -> None:
        if self.tokens is None:
            return
        error = self.refused(context.invocation_metadata(), scope, model)
        if error is not None:
            await abort(context, error)

    def overloaded(self, model: str, version: str | int | None, label: str | None = None) -> Exception | None:
        """The refusal (answered RESOURCE_EXHAUSTED) when this front end runs too far behind the model's
        SLO (server/admission/overload.py) or the call is over the rate it admits while the model's answers come
        late (server/admission/rate.py); HTTP refuses before the body, gRPC before decoding and queueing."""
        lag = self.loop_lag.behind(GRPC_HOLD) if self.loop_lag is not None else 0.0
        if lag <= FLOOR and not self.service.limiting:
            return None
        refusal = self.service.overloaded(PROTOCOL, model, version, label, lag)
        return refusal.error if refusal is not None else None

    async def infer(self, context: grpc.aio.ServicerContext, model: str,
                    handler: Callable[[RequestContext], Awaitable[T]], version: str | int | None = None,
                    label: str | None = None) -> T:
        """An inference call: authorized, refused if the front end is overloaded, counted with
        protocol="grpc", its failure answered as a status."""
        if self.tokens is not None:
            await self.authorize(context, "infer", model)
        refused = self.overloaded(model, version, label)
        if refused is not None:
            await abort(context, refused)
        try:
            return await self.service.run(PROTOCOL, model, handler)
        except Exception as error:
            await abort(context, error)

    async def answer(self, context: grpc.aio.ServicerContext, scope: str, model: str | None,
                     build: Callable[[], T]) -> T:
        """A metadata or status call: authorized, its failure answered as a status (not counted as a request)."""
        await self.authorize(context, scope, model)
        try:
            return build()
        except Exception as error:
            await abort(context, error)


async def abort(context: grpc.aio.ServicerContext, error: BaseException) -> NoReturn:
    status = grpc_error(error)
    if status.trailing_metadata:
        context.set_trailing_metadata(status.trailing_metadata)
    await context.abort(status.code, status.details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def unimplemented(context: grpc.aio.ServicerContext, what: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, what)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
