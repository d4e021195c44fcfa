"""Run the HTTP server (uvicorn, uvloop, httptools, the inference routes answered in place)."""

from __future__ import annotations

import socket

import uvicorn

from .api.http_protocol import protocol_for
from .app import create_asgi_app
from .remote import EngineClient
from .settings import Settings


def run_http(settings: Settings, engine: EngineClient | None = None, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then finish every accepted request. ``sock``: an already bound socket."""
    app = create_asgi_app(settings, engine)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http=protocol_for(app.app),
        log_level=settings.log_level, access_log=settings.access_log, proxy_headers=settings.proxy_headers,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
