"""``create_app(settings)``: the FastAPI application and its lifespan.

Start-up loads and warms every model version, then freezes the garbage
collector's view of TensorFlow's objects (they caused 100+ ms tail spikes).
Shutdown marks the server not ready, lets uvicorn finish accepted requests,
then drains every batcher and unloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
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
from .metrics import BatchMetrics, Metrics
from .repository import ModelRepository, ModelState, ModelVersion
from .settings import Settings

log = logging.getLogger(__name__)


def _model_listener(metrics: Metrics, settings: Settings) -> tuple[object, object]:
    def make_observer(mv: ModelVersion) -> BatchMetrics:
        return metrics.observer(mv.name, str(mv.version), mv.backend, mv.device)

    def on_state(mv: ModelVersion) -> None:
        labels = (mv.name, str(mv.version))
        ready = mv.state is ModelState.AVAILABLE
        unloaded = (*labels, "tensorflow", "")  # the series of a version without a pool: loading or failed
        if mv.state is ModelState.END and mv.error is None:  # retired on purpose: its gauges go away
            metrics.forget(*labels, mv.backend, mv.device)
            with contextlib.suppress(KeyError):
                metrics.model_ready.remove(*unloaded)
            return
        if mv.pool is None:
            metrics.model_ready.labels(*unloaded).set(0)
            return
        with contextlib.suppress(KeyError):
            metrics.model_ready.remove(*unloaded)
        metrics.model_ready.labels(*labels, mv.backend, mv.device).set(1 if ready else 0)
        if ready and mv.batch_config is not None:
            metrics.load_duration.labels(*labels).set(mv.load_seconds)
            metrics.warmup_duration.labels(*labels).set(mv.warmup_seconds)
            metrics.queue_capacity.labels(*labels).set(mv.batch_config.max_queue_size)
            metrics.max_batch_size.labels(*labels).set(mv.batch_config.max_batch_size)
            metrics.slo_target.labels(*labels).set((mv.config.slo_ms or settings.slo_ms) / 1000.0)
            metrics.initialize(*labels)

    return make_observer, on_state


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application for these settings; nothing loads until its lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        make_observer, on_state = _model_listener(metrics, settings)
        repository = ModelRepository(settings, make_observer, on_state)  # type: ignore[arg-type]
        service = InferenceService(repository, metrics, settings)
        app.state.service = service
        await repository.sync()
        if settings.gc_freeze:
            gc.collect()
            gc.freeze()

        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
        poller = asyncio.create_task(repository.poll())
        metrics_server = None
        if settings.metrics_port is not None:
            from prometheus_client import start_http_server

            metrics_server, _ = start_http_server(settings.metrics_port, settings.host, metrics.registry)
        log.info("batchserve %s ready: models %s", __version__, repository.names())
        try:
            yield
        finally:
            service.draining = True
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await repository.close()
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
