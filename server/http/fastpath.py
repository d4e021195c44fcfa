"""The ASGI entry: the route table first, then inference POSTs answered here, everything else by FastAPI.

Every path is looked up once in server/admission/routes.py's table; its token check runs before
any handler (the admission pipeline, server/admission/pipeline.py). An inference POST is then
admitted as the in-protocol path admits it, its body read (counted in the bytes in flight as its
chunks arrive: a chunked body has no Content-Length to reserve) and handed to
``InferenceService.infer``. This skips FastAPI's routing, dependency solving and middleware stack.
The in-protocol path (server/http/protocol.py) takes most inference requests before they get here;
chunked, oversized and pipelined ones come this way.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from server.admission.auth import bearer
from server.admission.limits import InflightFull
from server.admission.pipeline import Admission
from server.admission.routes import Route, route
from server.codecs.v2 import HEADER_LENGTH
from server.core.request import Codec, InferRequest
from server.core.service import InferenceService, error_reply
from server.http import kserve, tfserving
from server.http.body import read_body
from server.observability import tracing
from server.observability.access_log import tagged

CODECS: dict[str, tuple[str, Codec]] = {"v2": (kserve.PROTOCOL, kserve.CODEC),
                                        "tfserving": (tfserving.PROTOCOL, tfserving.CODEC)}


def inference_request(found: Route, headers: list[tuple[bytes, bytes]]) -> InferRequest:
    """The InferRequest of an inference route, before its body: both HTTP entries build it here. While tracing
    is on, a sampled one is traced from here, continuing the ``traceparent`` among ``headers`` (lower-case)."""
    assert found.inference is not None and found.model is not None
    protocol, codec = CODECS[found.inference]
    request = InferRequest(protocol, found.model, found.version, found.label, codec, started=time.perf_counter())
    if tracing.TRACER is not None:
        tracing.TRACER.http(request, headers)
    return request


class InferenceFastPath:
    """The outermost ASGI app: POSTs to inference paths are answered here; everything else (other
    routes, lifespan) goes to the FastAPI app, after its token check."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state
        self.admission = Admission(app.state)
        self.protect_health = app.state.settings.auth_health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = route(scope["method"], scope["path"], self.protect_health)
        token = None
        if self.admission.tokens is not None:
            token = bearer(next((v for k, v in scope["headers"] if k == b"authorization"), None))
            if found.inference is None:
                refusal, entry = self.admission.token(token, found.scope, found.model)
                if refusal is not None:
                    await refusal.reply.response()(scope, receive, send)
                    return
                if entry is not None and entry.models is not None:  # routes that list models show only these
                    scope.setdefault("state", {})["token_models"] = entry.models
        if found.inference is None:
            await self.app(scope, receive, send)
            return
        request = inference_request(found, scope["headers"])
        request.headers = scope["headers"]  # read only for a log line
        await self._infer(request, token, scope, receive, send)

    async def _infer(self, request: InferRequest, token: str | None, scope: Scope, receive: Receive,
                     send: Send) -> None:
        scope["app"] = self.app
        admission = self.admission
        refusal = admission.admit(request, token)
        if refusal is not None:
            await refusal.reply.response()(scope, receive, send)
            return
        counted = _Counted(receive, admission) if admission.inflight is not None else None
        body_request = Request(scope, counted or receive)
        service: InferenceService = self.state.service
        try:
            try:
                body = await read_body(body_request, service.settings.max_body_bytes)
            except InflightFull:
                reply = admission.inflight_full(request).reply
            except Exception as error:  # a body too large, a client gone
                service.failed(request, error)
                reply = error_reply(error)
            else:
                request.payload = (body, body_request.headers.get(HEADER_LENGTH))
                try:
                    reply = await service.infer(request)
                except Exception as error:  # counted by infer
                    reply = error_reply(error)
        finally:
            if counted is not None:
                admission.release(counted.reserved)
        if request.request_id is not None:  # logged: the answer names it
            reply = tagged(reply, request.request_id)
        await reply.response()(scope, receive, send)


class _Counted:
    """A receive channel that counts body chunks in the bytes in flight as they arrive; InflightFull
    (not counted: the caller refuses it through admission) when one would pass the limit."""

    __slots__ = ("admission", "receive", "reserved")

    def __init__(self, receive: Receive, admission: Admission) -> None:
        self.receive, self.admission, self.reserved = receive, admission, 0

    async def __call__(self) -> Message:
        message = await self.receive()
        size = len(message.get("body", b""))
        if size:
            if not self.admission.reserve(size, self.reserved):
                raise InflightFull("max_inflight_bytes")
            self.reserved += size
        return message
