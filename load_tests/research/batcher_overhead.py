"""How much CPU the batcher itself spends, with a model that does nothing.

    python -m load_tests.research.batcher_overhead [--requests 20000] [--json out.json]

For 1..256 concurrent submitters (one row per request), prints microseconds of
process CPU per request and per batch, the mean batch size, and the same loop
without the batcher (each submitter awaiting the no-op model directly) as the
floor the event loop itself costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import numpy as np

from batching import BatchConfig, Batcher

CONCURRENCY = (1, 2, 4, 8, 16, 32, 64, 128, 256)


async def _noop(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"]}


async def measure(concurrency: int, requests: int, max_batch_size: int) -> dict[str, Any]:
    batches = 0

    async def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal batches
        batches += 1
        return {"y": inputs["x"]}

    batcher = Batcher(model, BatchConfig(max_batch_size=max_batch_size, max_queue_delay=0.0005,
                                         max_queue_size=1 << 20))
    row = {"x": np.zeros((1, 16), np.float32)}
    per_worker = max(1, requests // concurrency)

    async def submitter() -> None:
        for _ in range(per_worker):
            await batcher.submit(row)

    async def direct() -> None:
        for _ in range(per_worker):
            await _noop(row)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await batcher.close()
    base = time.process_time()
    await asyncio.gather(*(direct() for _ in range(concurrency)))
    base = time.process_time() - base
    total = per_worker * concurrency
    return {
        "concurrency": concurrency, "requests": total, "batches": batches,
        "mean_batch": total / batches, "us_per_request": cpu / total * 1e6,
        "us_per_batch": cpu / batches * 1e6, "floor_us_per_request": base / total * 1e6,
        "requests_per_s": total / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rows = [asyncio.run(measure(c, args.requests, args.max_batch_size)) for c in CONCURRENCY]
    print(f"batcher overhead, no-op model, max_batch_size={args.max_batch_size} (CPU microseconds)")
    print(f"{'submitters':>10} {'mean batch':>10} {'us/request':>10} {'us/batch':>9} {'loop floor':>10} {'req/s':>9}")
    for r in rows:
        print(f"{r['concurrency']:>10} {r['mean_batch']:>10.1f} {r['us_per_request']:>10.1f} {r['us_per_batch']:>9.1f}"
              f" {r['floor_us_per_request']:>10.1f} {r['requests_per_s']:>9.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
