"""The in-process server (tests/harness.py) over four synthetic models, and the HTTP routes into it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ..harness import ECHO, MIXED, Client, Served, broken_model, serving, synthetic_model


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """``syn`` (label ``stable`` = version 1), ``mixed``, ``echo`` (tests/harness.py) and ``broken``
    (its model.yaml does not load)."""
    root = tmp_path / "repo"
    synthetic_model(root, "syn", version_labels={"stable": 1})
    synthetic_model(root, "mixed", MIXED)
    synthetic_model(root, "echo", ECHO)
    return broken_model(root)


@pytest.fixture
async def served(repository: Path) -> AsyncIterator[Served]:
    async with serving(repository) as server:
        yield server


@pytest.fixture(params=["socket", "asgi"])
def via(request: pytest.FixtureRequest) -> str:
    """The route into the server for inference: the in-protocol path on a socket, or the ASGI path."""
    return str(request.param)


@pytest.fixture
def http(served: Served, via: str) -> Client:
    return served.client(via)


@pytest.fixture
async def stub(served: Served) -> AsyncIterator[Any]:
    """A KServe V2 gRPC stub (tritonclient's generated one) on the module's ``served`` (started with grpc=True)."""
    service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
    assert served.grpc_target is not None
    async with grpc.aio.insecure_channel(served.grpc_target) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
