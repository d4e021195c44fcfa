"""Helpers for the security tests: tokens files, self-signed certificates, servers behind them."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .servers import ServerProcess

SCOPES = ("infer", "metadata", "admin", "metrics")


def token(name: str) -> str:
    return f"{name}-token-0123456789abcdef"


def tokens_document() -> dict[str, Any]:
    """One token per scope ('<scope>-only'), one with every scope but it ('not-<scope>'), one with
    every scope limited to the model 'other', and 'all' (every scope, every model)."""
    entries: list[dict[str, Any]] = []
    for scope in SCOPES:
        entries.append({"token": token(f"{scope}-only"), "scopes": [scope]})
        entries.append({"token": token(f"not-{scope}"), "scopes": [s for s in SCOPES if s != scope]})
    entries.append({"token": token("other-model"), "scopes": list(SCOPES), "models": ["other"]})
    entries.append({"token": token("all"), "scopes": list(SCOPES)})
    return {"tokens": entries}


def write_tokens(path: Path, document: dict[str, Any] | None = None) -> Path:
    path.write_text(yaml.safe_dump(document or tokens_document()))
    return path


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(name)}"}


class GuardedServer(ServerProcess):
    """A server whose readiness is asked with ``client`` options (a token, a CA bundle, https)."""

    def __init__(self, repository: Path, log_path: Path, scheme: str = "http",
                 client: dict[str, Any] | None = None, **settings: Any) -> None:
        super().__init__(repository, log_path, **settings)
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.client = client or {}


def guarded_servers(tmp_path: Path) -> Iterator[Callable[..., GuardedServer]]:
    """A fixture's body: start servers for one test; every one is stopped afterwards."""
    started: list[GuardedServer] = []

    def start(repository: Path, **options: Any) -> GuardedServer:
        server = GuardedServer(repository, tmp_path / f"guarded{len(started)}.log", **options)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


def self_signed(folder: Path, name: str = "server", ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    """(certificate, key) for 127.0.0.1 made with the openssl CLI: self-signed, or signed by ``ca``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subject = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                        "-out", str(cert), *subject], check=True, capture_output=True)
        return cert, key
    request = folder / f"{name}.csr"
    extensions = folder / f"{name}.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(request), "-subj", f"/CN={name}"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-days", "1", "-extfile", str(extensions), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def trusting(ca: Path, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """A client TLS context that trusts ``ca`` (and presents ``client``'s certificate and key)."""
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    return context
