"""The inference routes, dispatched before FastAPI's router.

Both protocols' infer/predict endpoints are matched here by splitting the path
once and handed straight to the same handlers the FastAPI routes use; this skips
route matching over every route, dependency solving and the exception-middleware
stack, which together cost more CPU per request than parsing a small body.
Every other path, and anything that does not match exactly, goes to FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from server.admission.limits import InflightBytes, InflightFull
from server.admission.routes import admit
from server.codecs.v2 import HEADER_LENGTH
from server.core.service import BodyReader, InferenceService, Reply
from server.http import kserve, tfserving
from server.http.body import read_body

Handler = Callable[[InferenceService, BodyReader, "str | None"], Awaitable[Reply]]


class Route:
    """An inference path's handler (called with the service, a body reader and the V2
    Inference-Header-Content-Length) and the model it names, known before the body is read."""

    __slots__ = ("handler", "label", "model", "protocol", "version")

    def __init__(self, handler: Handler, protocol: str, model: str, version: str | None = None,
                 label: str | None = None) -> None:
        self.handler, self.protocol, self.model, self.version, self.label = handler, protocol, model, version, label

    def __call__(self, service: InferenceService, read: BodyReader, header: str | None) -> Awaitable[Reply]:
        return self.handler(service, read, header)


def match(path: str) -> Route | None:
    """The route of an inference path, or None when FastAPI should route it."""
    parts = path.split("/")
    # ["", "v2", "models", NAME, "infer"] or ["", "v2", "models", NAME, "versions", V, "infer"]
    if len(parts) < 4 or parts[0] != "" or parts[2] != "models":
        return None
    if parts[1] == "v2" and parts[-1] == "infer":
        if len(parts) == 5 and parts[3]:
            name = parts[3]
            return Route(lambda service, read, header: kserve.infer_request(service, name, None, read, header),
                         kserve.PROTOCOL, name)
        if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
            name, version = parts[3], parts[5]
            return Route(lambda service, read, header: kserve.infer_request(service, name, version, read, header),
                         kserve.PROTOCOL, name, version)
        return None
    if parts[1] == "v1" and parts[-1].endswith(":predict"):
        last = parts[-1][: -len(":predict")]
        if len(parts) == 4 and last:
            return Route(lambda service, read, _: tfserving.predict_request(service, last, None, None, read),
                         tfserving.PROTOCOL, last)
        if len(parts) == 6 and parts[3] and last:
            name = parts[3]
            if parts[4] == "versions":
                return Route(lambda service, read, _: tfserving.predict_request(service, name, last, None, read),
                             tfserving.PROTOCOL, name, version=last)
            if parts[4] == "labels":
                return Route(lambda service, read, _: tfserving.predict_request(service, name, None, last, read),
                             tfserving.PROTOCOL, name, label=last)
    return None


class InferenceFastPath:
    """The outermost ASGI app: POSTs to inference paths go straight to their handlers;
    everything else (other routes, lifespan) goes to the FastAPI app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.guarded = getattr(app.state, "auth", None) is not None  # a tokens file is set

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.guarded and scope["type"] == "http":
            authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
            refused, entry = admit(self.state, scope["method"], scope["path"], authorization)
            if refused is not None:
                await refused.response()(scope, receive, send)
                return
            if entry is not None and entry.models is not None:  # routes that list models show only these
                scope.setdefault("state", {})["token_models"] = entry.models
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = match(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                inflight: InflightBytes | None = self.state.inflight
                counted = _Counted(receive, inflight) if inflight is not None else None
                request = Request(scope, counted or receive)
                service = self.state.service
                try:
                    reply = await handler(service, lambda: read_body(request, service.settings.max_body_bytes),
                                          request.headers.get(HEADER_LENGTH))
                finally:
                    if counted is not None:
                        counted.release()
                await reply.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Counted:
    """A receive channel that counts body chunks in the bytes in flight as they arrive (chunked bodies
    have no Content-Length to reserve up front); InflightFull when one would pass the limit."""

    __slots__ = ("inflight", "receive", "reserved")

    def __init__(self, receive: Receive, inflight: InflightBytes) -> None:
        self.receive, self.inflight, self.reserved = receive, inflight, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        size = len(message.get("body", b""))
        if size:
            if not self.inflight.reserve(size):
                raise InflightFull(f"this front end holds {self.inflight.used >> 20} MiB of request bodies "
                                   f"(max_inflight_bytes={self.inflight.limit}); retry shortly")
            self.reserved += size
        return message

    def release(self) -> None:
        self.inflight.release(self.reserved)
        self.reserved = 0
