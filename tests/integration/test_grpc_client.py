"""server.client.AsyncClient with transport="grpc": the same API, rows, hooks and typed errors as over HTTP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.client import AsyncClient, BadRequestError, DeadlineExceededError, ModelNotFoundError

from ..observe import metric, synthetic_repository, until
from ..reference import direct


async def test_two_hundred_concurrent_requests_get_their_own_rows(demo_server, demo_repository):
    rng = np.random.default_rng(8)
    rows = [rng.standard_normal((int(rng.integers(1, 4)), 32)).astype(np.float32) for _ in range(200)]
    async with AsyncClient(demo_server.grpc_target, transport="grpc") as client:
        results = await asyncio.gather(*(client.predict("tabular", {"features": r}, priority=1) for r in rows))
    for request_rows, result in zip(rows, results):
        expected = direct(demo_repository / "tabular" / "1", features=request_rows)["score"]
        np.testing.assert_allclose(result["score"], expected, rtol=1e-5, atol=1e-6)


async def test_strings_hooks_metadata_and_readiness(demo_server):
    async with AsyncClient(
        f"grpc://{demo_server.grpc_target}", transport="grpc",
        preprocess={"spam": lambda texts: {"text": np.array([t.encode() for t in texts], dtype=object)}},
        postprocess={"spam": lambda out: [label.decode() for label in out["label"]]},
    ) as client:
        assert await client.predict("spam", ["claim your free voucher today", "see you at 3pm"], version=1) == \
            ["spam", "ham"]
        assert await client.ready("spam") and await client.ready() and not await client.ready("missing")
        metadata = await client.metadata("spam")
        assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


async def test_typed_errors(demo_server):
    async with AsyncClient(demo_server.grpc_target, transport="grpc") as client:
        with pytest.raises(ModelNotFoundError, match="not in the repository"):
            await client.predict("missing", {"x": np.zeros((1, 4), np.float32)})
        with pytest.raises(BadRequestError, match="dimension 1 must be 4") as caught:
            await client.predict("scale", {"x": np.zeros((1, 2), np.float32)})
        assert caught.value.status == 400
        with pytest.raises(ModelNotFoundError):
            await client.metadata("missing")
    with pytest.raises(ValueError, match="transport"):
        AsyncClient(demo_server.grpc_target, "tfserving", transport="grpc")


async def test_timeout_is_the_server_deadline(start_server, tmp_path):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), poll_interval=0)
    gate.touch()
    async with AsyncClient(server.grpc_target, transport="grpc") as client:
        held = asyncio.ensure_future(client.predict("syn", {"features": np.ones((1, 4), np.float32)}))
        await until(lambda: metric(server.url, "batchserve_inflight_batches", model="syn") == 1, "a batch computing")
        with pytest.raises(DeadlineExceededError, match="deadline") as caught:
            await client.predict("syn", {"features": np.full((1, 4), 2, np.float32)}, timeout=0.05)
        assert caught.value.status == 504
        gate.unlink()
        assert (await held)["total"].tolist() == [[1.0]]
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 1
