"""Property: whatever the request sizes and batch limits, every caller gets exactly its own rows back,
and no more than max_inflight_batches batches compute at once."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from batching import BatchConfig, Batcher


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=60),
    max_batch=st.integers(1, 16),
    pad_to_allowed=st.booleans(),
    inflight=st.integers(1, 3),
)
def test_each_request_gets_exactly_its_rows(sizes, max_batch, pad_to_allowed, inflight):
    allowed = tuple(sorted({max(1, max_batch // 2), max_batch})) if pad_to_allowed else ()
    seen_sizes: list[int] = []
    computing = [0, 0]  # now, peak

    async def model(inputs):
        seen_sizes.append(inputs["x"].shape[0])
        computing[0] += 1
        computing[1] = max(computing)
        await asyncio.sleep(0)
        computing[0] -= 1
        return {"y": inputs["x"] * 10 + 1}

    async def scenario() -> None:
        batcher = Batcher(model, BatchConfig(max_batch_size=max_batch, max_queue_delay=0.0005,
                                             allowed_batch_sizes=allowed, max_inflight_batches=inflight,
                                             max_queue_size=10_000))
        requests = [np.arange(n, dtype=np.float64).reshape(n, 1) + 1000 * i for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.submit({"x": x}) for x in requests))
        await batcher.close()
        for x, out in zip(requests, results):
            np.testing.assert_array_equal(out["y"], x * 10 + 1)

    asyncio.run(scenario())
    assert all(size <= max_batch for size in seen_sizes)
    assert computing[1] <= inflight
    if allowed:
        assert set(seen_sizes) <= set(allowed)
