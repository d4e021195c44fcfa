"""Measured compute per batch size at warm-up: the starting point of a version's cost model.

The SLO scheduler (``batching/slo.py``) predicts how long a batch takes from its cost
model; before the first request that model knows nothing. Right after warm-up (so no
tracing or first-call allocation is timed), each warm-up size is run three times through
the pool, exactly as the batcher will run it, and the median kept (one timing can catch a
neighbour's burst on the core). The inputs are the warm-up's own, the first batch of each
size that ran (real data where the version has it: server/runtime/warmup_data.py); a size
whose generated inputs the model rejected is not seeded.

Only under ``scheduling: slo``, which needs a prediction for the first requests: under
the fixed rule the cost model (and its metric) learns from live batches alone, and
loading runs nothing more than warm-up. A failure here (a synthetic model's injected
errors, say) leaves the model unseeded, never unloaded.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence

import numpy as np

from batching import Batcher
from server.runtime import WorkerPool
from server.runtime.warmup_data import WarmupBatch

log = logging.getLogger(__name__)


async def seed_cost_model(batcher: Batcher, pool: WorkerPool, warmed: Sequence[WarmupBatch], repeats: int = 3,
                          signature: str | None = None) -> None:
    """When ``batcher`` (``signature``'s; None: the default's) schedules for an SLO, seed its cost model with each
    size's median of ``repeats`` runs on ``pool`` of the first of ``warmed`` (the warm-up batches that ran) of that
    size and signature, timed by the model's worker as live batches are (else the round trip)."""
    if batcher.config.scheduling != "slo":
        return
    name = signature or pool.signature.name
    inputs_of: dict[int, dict[str, np.ndarray]] = {}
    for batch in warmed:
        if batch.signature == name:
            inputs_of.setdefault(batch.size, batch.inputs)
    if not inputs_of:  # no warm-up, or the model rejected every generated batch: it learns from live batches
        return
    costs: dict[int, float] = {}
    try:
        for size, inputs in sorted(inputs_of.items()):
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                outputs = await pool.run(inputs, signature)
                runs.append(getattr(outputs, "seconds", time.perf_counter() - started))  # the worker's own timing
            costs[size] = statistics.median(runs)
        batcher.seed_costs(costs)
    except Exception as error:  # the model loaded and warmed up: it serves, and learns from live batches
        log.warning("cost model of %s not seeded from warm-up timings: %r", batcher.name or "a model", error)
