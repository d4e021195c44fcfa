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
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server import __version__
from server.admission.auth import TokenFile, watching
from server.admission.limits import InflightBytes, TokenRate
from server.admission.overload import LoopLag
from server.codecs import dumps
from server.core.service import InferenceService
from server.grpc.server import grpc_serving
from server.http import admin, health, kserve, repository_api, tfserving
from server.http.fastpath import InferenceFastPath
from server.models.lifecycle import serving_repository
from server.multiprocess import messages
from server.multiprocess.remote import EngineClient
from server.observability.merge import merged_registry
from server.observability.metrics import Metrics, observer
from server.observability.model_stats import StatsTable, merged
from server.observability.tracing import traced
from server.settings import Settings

log = logging.getLogger(__name__)

Scrape = Callable[[], Awaitable[CollectorRegistry]]  # what /metrics exposes, built on each scrape


def create_app(settings: Settings | None = None, engine: EngineClient | None = None) -> FastAPI:
    """The application for these settings; nothing loads until its lifespan starts.

    With ``engine``, this is one front-end process: requests go to the engine process's
    batchers and the catalog is the one the engine announces.
    """
    settings = settings or Settings()
    metrics = Metrics()
    tokens = TokenFile(settings.auth_tokens_file) if settings.auth_tokens_file is not None else None
    if tokens is not None and settings.metrics_port is not None:
        log.warning("metrics_port serves /metrics without a token: bind it where only Prometheus can reach it")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if engine is not None:
            async with (watching(tokens, settings.auth_reload_interval), traced(settings, f"frontend-{engine.index}"),
                        _frontend(app, settings, metrics, engine),
                        grpc_serving(app.state, shared_port=True), _measuring(app.state.loop_lag),
                        _metrics_port(settings, app.state.scrape)):
                yield
            return
        async with (watching(tokens, settings.auth_reload_interval), traced(settings, "server"),
                    serving_repository(settings, metrics) as repository):
            service = InferenceService(repository, metrics, settings)
            app.state.service = service
            metrics_server = None
            if settings.metrics_port is not None:
                from prometheus_client import start_http_server

                metrics_server, _ = start_http_server(settings.metrics_port, settings.host, metrics.registry)
            log.info("batchserve %s ready: models %s", __version__, repository.names())
            try:
                async with grpc_serving(app.state), _measuring(app.state.loop_lag):
                    yield
            finally:
                service.draining = True
                if metrics_server is not None:
                    metrics_server.shutdown()
        log.info("batchserve stopped: every accepted request answered")

    app = FastAPI(title="batchserve", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.auth = tokens  # None: no tokens file, nothing is checked
    app.state.rate = TokenRate(settings.auth_rate_limit) if tokens is not None and settings.auth_rate_limit else None
    app.state.inflight = InflightBytes(settings.max_inflight_bytes) if settings.max_inflight_bytes else None
    app.state.scrape = _scrape_source(metrics, engine)
    app.state.statistics = _statistics_source(metrics, engine)
    app.state.loop_lag = LoopLag(observe=observer(metrics.loop_lag)) if settings.overload_share > 0 else None
    for module in (tfserving, kserve, health, admin, repository_api):
        app.include_router(module.router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        text = "no route for this path" if exc.status_code == 404 else str(exc.detail)
        return Response(dumps({"error": f"{text}: {request.method} {request.url.path}"}), exc.status_code,
                        media_type="application/json")

    return app


@contextlib.asynccontextmanager
async def _measuring(lag: LoopLag | None) -> AsyncIterator[None]:
    """The loop's lag measured while requests are served (not while models load and warm up)."""
    if lag is None:
        yield
        return
    lag.start()
    try:
        yield
    finally:
        lag.stop()


@contextlib.asynccontextmanager
async def _frontend(app: FastAPI, settings: Settings, metrics: Metrics, engine: EngineClient) -> AsyncIterator[None]:
    """A front end's life: connected to the engine (again, if it restarts) until uvicorn has answered
    every accepted request."""
    service = InferenceService(engine.catalog, metrics, settings)
    app.state.service = service
    engine.hold_metrics.register(metrics.registry)
    connection = asyncio.create_task(engine.run())
    await engine.announced.wait()  # listen only once the engine has loaded the repository, as one process does
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    log.info("batchserve %s front end %d up", __version__, engine.index)
    try:
        yield
    finally:
        service.draining = True
        await engine.close()
        connection.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connection


def _scrape_source(metrics: Metrics, engine: EngineClient | None) -> Scrape:
    """What /metrics exposes: this process's registry, or (front end) every process's series merged."""
    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

    async def scrape() -> CollectorRegistry:
        if engine is None or multiprocess_dir is None:
            return metrics.registry
        try:
            families = await asyncio.wait_for(engine.call(messages.Scrape), 5.0)
        except Exception:  # the engine is restarting: the front ends' series still count
            families = []
        return merged_registry(multiprocess_dir, families)

    return scrape


def _statistics_source(metrics: Metrics, engine: EngineClient | None) -> Callable[[], Awaitable[StatsTable]]:
    """Triton's statistics: this process's counters; in a front end, its requests' and the engine's batches'."""

    async def statistics() -> StatsTable:
        if engine is None:
            return metrics.stats
        return merged(await asyncio.wait_for(engine.call(messages.Scrape, True), 5.0), metrics.stats)

    return statistics


@contextlib.asynccontextmanager
async def _metrics_port(settings: Settings, scrape: Scrape) -> AsyncIterator[None]:
    """``--metrics-port`` in a front end: every front end listens on it with SO_REUSEPORT (the supervisor
    holds it, as it holds the HTTP port) and answers the same merged /metrics as the HTTP port, so the
    port stays served while any front end is, and a restarted one joins again."""
    if settings.metrics_port is None:
        yield
        return
    from server.multiprocess.supervisor import reuseport_socket

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)).decode("latin-1")
            method = head.split(" ", 1)[0]
            headers = (line.partition(":") for line in head.split("\r\n")[1:])
            accept = next((value.strip() for name, _, value in headers if name.strip().lower() == "accept"), "")
            if method in ("GET", "HEAD"):
                encoder, content_type = choose_encoder(accept)
                status, body = "200 OK", encoder(await scrape())
            else:
                status, content_type, body = "405 Method Not Allowed", "text/plain", b"GET /metrics\n"
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # a client that sent no request, too large a head, or left: nothing to answer
        finally:
            writer.close()

    server = await asyncio.start_server(answer, sock=reuseport_socket(settings.host, settings.metrics_port))
    try:
        yield
    finally:
        server.close()


def create_asgi_app(settings: Settings | None = None, engine: EngineClient | None = None) -> InferenceFastPath:
    """What ``batchserve serve`` runs: the app behind the inference fast path, which answers
    predict/infer POSTs before FastAPI's own per-request machinery (routing, telemetry hooks,
    middleware stack) and hands everything else, lifespan included, to FastAPI."""
    return InferenceFastPath(create_app(settings, engine))
