"""Run the HTTP server (uvicorn, uvloop, httptools, the inference routes answered in place)."""

from __future__ import annotations

import socket
import ssl
from typing import Any

import uvicorn

from server.app import create_asgi_app
from server.http.protocol import protocol_for
from server.multiprocess.remote import EngineClient
from server.settings import Settings


def tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's TLS arguments: HTTPS with a certificate and key; with a CA bundle, clients must present a
    certificate it signed (mutual TLS)."""
    if settings.ssl_certfile is None and settings.ssl_keyfile is None and settings.ssl_ca_certs is None:
        return {}
    if settings.ssl_certfile is None or settings.ssl_keyfile is None:
        raise ValueError("TLS needs both ssl_certfile and ssl_keyfile (ssl_ca_certs alone asks for mutual TLS "
                         "on top of them)")
    options: dict[str, Any] = {"ssl_certfile": str(settings.ssl_certfile), "ssl_keyfile": str(settings.ssl_keyfile)}
    if settings.ssl_ca_certs is not None:
        options.update(ssl_ca_certs=str(settings.ssl_ca_certs), ssl_cert_reqs=ssl.CERT_REQUIRED)
    return options


def run_http(settings: Settings, engine: EngineClient | None = None, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then finish every accepted request. ``sock``: an already bound socket."""
    app = create_asgi_app(settings, engine)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http=protocol_for(app.app),
        log_config=None, log_level=settings.log_level, access_log=settings.access_log,  # lines in our format
        proxy_headers=settings.proxy_headers,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None, **tls_options(settings),
    )
    uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)
