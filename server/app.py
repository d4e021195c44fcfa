"""``create_app(settings)``: the FastAPI application and its lifespan.

Start-up loads and warms every model version, then freezes the garbage
collector's view of TensorFlow's objects (they caused 100+ ms tail spikes).
Shutdown marks the server not ready, lets uvicorn finish accepted requests,
then drains every batcher and unloads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from . import __version__
from .api import admin, health, kserve, tfserving
from .api.fastpath import InferenceFastPath
from .codecs import dumps
from .inference import InferenceService
from .lifecycle import serving_repository
from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for these settings; nothing loads until its lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with serving_repository(settings, metrics) as repository:
            service = InferenceService(repository, metrics, settings)
            app.state.service = service
            metrics_server = None
            if settings.metrics_port is not None:
                from prometheus_client import start_http_server

                metrics_server, _ = start_http_server(settings.metrics_port, settings.host, metrics.registry)
            log.info("batchserve %s ready: models %s", __version__, repository.names())
            try:
                yield
            finally:
                service.draining = True
                if metrics_server is not None:
                    metrics_server.shutdown()
        log.info("batchserve stopped: every accepted request answered")

    app = FastAPI(title="batchserve", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.metrics = metrics
    app.state.settings = settings
    for module in (tfserving, kserve, health, admin):
        app.include_router(module.router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        text = "no route for this path" if exc.status_code == 404 else str(exc.detail)
        return Response(dumps({"error": f"{text}: {request.method} {request.url.path}"}), exc.status_code,
                        media_type="application/json")

    return app


def create_asgi_app(settings: Settings | None = None) -> InferenceFastPath:
    """What ``batchserve serve`` runs: the app behind the inference fast path, which answers
    predict/infer POSTs before FastAPI's own per-request machinery (routing, telemetry hooks,
    middleware stack) and hands everything else, lifespan included, to FastAPI."""
    return InferenceFastPath(create_app(settings))
