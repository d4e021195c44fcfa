"""What every gRPC handler shares: the app's state, the admission pipeline, and failures as statuses.

Authorization is checked here, inside each handler, and not in a server interceptor: a token may be
limited to some models, and the model is named in the request message, which only the handler has
parsed (an interceptor would parse every message twice). Health and reflection, which name no model,
are checked by ``server/grpc/server.py``'s interceptor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, TypeVar

import grpc

from server.admission.auth import HEALTH, bearer
from server.admission.overload import GRPC_HOLD
from server.admission.pipeline import Admission
from server.core.request import InferRequest
from server.core.service import InferenceService
from server.grpc.status import grpc_error
from server.observability import tracing
from server.observability.access_log import REQUEST_ID
from server.runtime.instance_thread import settle

PROTOCOL = "grpc"
T = TypeVar("T")
# The request's deadline is the call's, this much earlier: the server then answers DEADLINE_EXCEEDED itself
# (counted as expired, with its message) instead of racing gRPC's own cancellation at the same instant.
DEADLINE_MARGIN = 0.001


@dataclass(slots=True, eq=False)
class Malformed:
    """What the deserializer gives for bytes that are not the method's message (answered INVALID_ARGUMENT:
    left to gRPC, a parse error would be UNKNOWN)."""

    reason: str


def call_timeout(context: grpc.aio.ServicerContext, timeout: float | None = None) -> float | None:
    """The request's timeout in seconds: the earlier of the call's gRPC deadline and ``timeout``."""
    remaining = context.time_remaining()
    if remaining is None:
        return timeout
    remaining = max(remaining - DEADLINE_MARGIN, 1e-6)
    return remaining if timeout is None or remaining < timeout else timeout


def token_of(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return bearer(value)
    return None


class Calls:
    """Built once per server from the FastAPI app's state (``service``, ``settings``, ``metrics``, ``auth``)."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.admission = Admission(state)

    @property
    def service(self) -> InferenceService:
        return self.admission.service  # read once it exists

    def refused(self, metadata: Any, scope: str, model: str | None) -> Exception | None:
        """None when the call may go on; else the refusal (an AuthError, or RateLimited for a token over
        ``auth_rate_limit``, one budget with its HTTP requests), counted as HTTP's."""
        if scope == HEALTH and not self.admission.settings.auth_health:
            return None
        refusal, _ = self.admission.token(token_of(metadata), scope, model)
        return refusal.error if refusal is not None else None

    async def authorize(self, context: grpc.aio.ServicerContext, scope: str, model: str | None = None) -> None:
        if self.admission.tokens is None:  # no tokens file: nothing is checked
            return
        error = self.refused(context.invocation_metadata(), scope, model)
        if error is not None:
            await abort(context, error)

    async def infer(self, context: grpc.aio.ServicerContext, request: InferRequest, size: int = 0) -> Any:
        """An inference call through the admission pipeline (``size``: its bytes, counted in flight when
        ``max_inflight_bytes`` is set) and ``InferenceService.start`` (the batch's delivery resolves the call's
        one future: no coroutine per layer); a refusal or failure answered as a status."""
        admission = self.admission
        token = token_of(context.invocation_metadata()) if admission.tokens is not None else None
        request.headers = context.invocation_metadata  # read only for a log line
        if tracing.TRACER is not None:
            tracing.TRACER.grpc(request, context.invocation_metadata())
        refusal = admission.admit(request, token, size, GRPC_HOLD)
        if refusal is not None:
            await abort(context, refusal.error)
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending = self.service.start(request, partial(settle, answered))  # its failures come as answers too
        try:
            answer = await answered
        except asyncio.CancelledError:  # the call was cancelled: its request leaves the queue, counted cancelled
            pending.cancel()
            raise
        except Exception as error:
            await abort(context, error, request.request_id)
        finally:
            admission.release(size)
        if request.request_id is not None:  # logged: the answer names it
            context.set_trailing_metadata(((REQUEST_ID, request.request_id),))
        return answer

    async def answer(self, context: grpc.aio.ServicerContext, scope: str, model: str | None,
                     build: Callable[[], T]) -> T:
        """A metadata or status call: authorized, its failure answered as a status (not counted as a request)."""
        await self.authorize(context, scope, model)
        try:
            return build()
        except Exception as error:
            await abort(context, error)


async def abort(context: grpc.aio.ServicerContext, error: BaseException, request_id: str | None = None) -> NoReturn:
    status = grpc_error(error)
    metadata = status.trailing_metadata + (((REQUEST_ID, request_id),) if request_id is not None else ())
    if metadata:
        context.set_trailing_metadata(metadata)
    await context.abort(status.code, status.details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


async def unimplemented(context: grpc.aio.ServicerContext, what: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, what)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
