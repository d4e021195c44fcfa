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


async def test_real_models_over_grpc_through_two_front_ends(start_server, demo_repository):
    """Four clients, each with a connection of its own, to the front ends sharing the port."""
    server = start_server(demo_repository, frontends=2, poll_interval=0)
    rng = np.random.default_rng(9)
    images = rng.random((16, 96, 96, 3), dtype=np.float32)
    rows = rng.standard_normal((64, 32)).astype(np.float32)
    clients = [AsyncClient(server.grpc_target, transport="grpc", retries=0, timeout=60) for _ in range(4)]
    try:
        image_outputs = await asyncio.gather(*(clients[i % 4].predict("image_classifier", {"image": images[i:i + 1]})
                                               for i in range(16)))
        tabular_outputs = await asyncio.gather(*(clients[i % 4].predict("tabular", {"features": rows[i:i + 2]})
                                                 for i in range(0, 64, 2)))
        texts = np.array([b"win a free phone now", b"lunch?"], dtype=object)
        spam = await clients[0].predict("spam", {"text": texts})
    finally:
        for client in clients:
            await client.aclose()
    want = direct(demo_repository / "image_classifier" / "1", image=images)["probabilities"]
    np.testing.assert_allclose(np.concatenate([o["probabilities"] for o in image_outputs]), want, rtol=1e-4, atol=1e-5)
    want = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(np.concatenate([o["score"] for o in tabular_outputs]), want, rtol=1e-4, atol=1e-5)
    assert spam["label"].tolist() == direct(demo_repository / "spam" / "1", text=texts)["label"].tolist()
    assert metric(server.url, "batchserve_requests_total", protocol="grpc", code="200") == 16 + 32 + 1
