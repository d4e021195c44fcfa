"""Measured compute per batch size at warm-up: the starting point of a version's cost model.

The SLO scheduler (``batching/slo.py``) predicts how long a batch takes from its cost
model; before the first request that model knows nothing. Right after warm-up (so no
tracing or first-call allocation is timed), one batch of each warm-up size is run and
timed through the pool, exactly as the batcher will run it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .runtime import WorkerPool
from .vocabulary import example_inputs


async def measure_batch_costs(pool: WorkerPool, sizes: Sequence[int]) -> dict[int, float]:
    """Seconds one batch of each size takes on ``pool`` (one run each, after warm-up)."""
    costs: dict[int, float] = {}
    for size in sizes:
        inputs = example_inputs(pool.signature, size)
        started = time.perf_counter()
        await pool.run(inputs)
        costs[size] = time.perf_counter() - started
    return costs
