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
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import kserve, tfserving


def match(path: str) -> Callable[[Request], Awaitable[Response]] | None:
    """The handler for an inference path, or None when FastAPI should route it."""
    parts = path.split("/")
    # ["", "v2", "models", NAME, "infer"] or ["", "v2", "models", NAME, "versions", V, "infer"]
    if len(parts) < 4 or parts[0] != "" or parts[2] != "models":
        return None
    if parts[1] == "v2" and parts[-1] == "infer":
        if len(parts) == 5 and parts[3]:
            name = parts[3]
            return lambda request: kserve._infer(request, name, None)
        if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
            name, version = parts[3], parts[5]
            return lambda request: kserve._infer(request, name, version)
        return None
    if parts[1] == "v1" and parts[-1].endswith(":predict"):
        last = parts[-1][: -len(":predict")]
        if len(parts) == 4 and last:
            return lambda request: tfserving._predict(request, last)
        if len(parts) == 6 and parts[3] and last:
            if parts[4] == "versions":
                return lambda request: tfserving._predict(request, parts[3], version=last)
            if parts[4] == "labels":
                return lambda request: tfserving._predict(request, parts[3], label=last)
    return None


class InferenceFastPath:
    """The outermost ASGI app: POSTs to inference paths go straight to their handlers;
    everything else (other routes, lifespan) goes to the FastAPI app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = match(scope["path"])
            if handler is not None:
                scope["app"] = self.app
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
