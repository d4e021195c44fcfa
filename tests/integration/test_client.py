"""server.client.AsyncClient against a real server: protocols, hooks, concurrency, typed errors."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from server.client import AsyncClient, BadRequestError, ModelNotFoundError

from ..reference import direct


@pytest.mark.parametrize(("protocol", "binary"), [("v2", True), ("v2", False), ("tfserving", False)])
async def test_two_hundred_concurrent_requests_get_their_own_rows(demo_server, demo_repository, protocol, binary):
    rng = np.random.default_rng(5)
    rows = [rng.standard_normal((int(rng.integers(1, 4)), 32)).astype(np.float32) for _ in range(200)]
    async with AsyncClient(demo_server.url, protocol, binary=binary) as client:
        results = await asyncio.gather(*(client.predict("tabular", {"features": r}) for r in rows))
    for request_rows, result in zip(rows, results):
        expected = direct(demo_repository / "tabular" / "1", features=request_rows)["score"]
        score = result["score"] if "score" in result else result["output"]
        np.testing.assert_allclose(np.asarray(score, dtype=np.float32).reshape(expected.shape), expected,
                                   rtol=1e-5, atol=1e-6)


async def test_strings_and_hooks(demo_server):
    async with AsyncClient(
        demo_server.url,
        preprocess={"spam": lambda texts: {"text": np.array([t.encode() for t in texts], dtype=object)}},
        postprocess={"spam": lambda out: [label.decode() for label in out["label"]]},
    ) as client:
        assert await client.predict("spam", ["claim your free voucher today", "see you at 3pm"]) == ["spam", "ham"]
        assert await client.ready("spam")
        assert (await client.metadata("spam"))["inputs"][0]["datatype"] == "BYTES"


async def test_typed_errors(demo_server):
    async with AsyncClient(demo_server.url) as client:
        with pytest.raises(ModelNotFoundError, match="not in the repository"):
            await client.predict("missing", {"x": np.zeros((1, 4), np.float32)})
        with pytest.raises(BadRequestError, match="dimension 1 must be 4") as caught:
            await client.predict("scale", {"x": np.zeros((1, 2), np.float32)})
        assert caught.value.status == 400
