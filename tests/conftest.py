"""Shared fixtures: the demo models built once, and real servers on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .secure import GuardedServer, guarded_servers
from .servers import ServerProcess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models spam, image_classifier and tabular (built by the same code as ``batchserve demo-models``;
    the image models for uint8 and JPEG have tests of their own), plus ``scale`` (y = 2x, float32 [None, 4])
    and ``two_io`` (two inputs, two outputs)."""
    from server.tools.demo_models import build_demo_models

    from .models import build_scale_model, build_two_io_model

    root = tmp_path_factory.mktemp("demo_models")
    build_demo_models(root, ["spam", "image_classifier", "tabular"])
    build_scale_model(root / "scale" / "1", 2.0)
    build_two_io_model(root / "two_io" / "1")
    return root


@pytest.fixture(scope="session")
def zoo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model zoo (tests/zoo.py): SavedModels exported the ways users export them, each with its model.yaml."""
    from .zoo import build_zoo

    return build_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers for one test; every one is stopped afterwards."""
    started: list[ServerProcess] = []

    def start(repository: Path, **settings: object) -> ServerProcess:
        server = ServerProcess(repository, tmp_path / f"server{len(started)}.log", **settings)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def demo_server(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the demo models, shared by the protocol tests."""
    server = ServerProcess(demo_repository, tmp_path_factory.mktemp("logs") / "demo_server.log",
                           poll_interval=0, max_queue_delay_ms=2)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def start_guarded(tmp_path: Path) -> Iterator[Callable[..., GuardedServer]]:
    """Servers behind tokens or TLS (tests/secure.py) for one test; every one is stopped afterwards."""
    yield from guarded_servers(tmp_path)
