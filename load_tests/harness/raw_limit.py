"""The raw in-process limit of a model: rows/s and latency per batch size, no server in the way.

    python -m load_tests.harness.raw_limit MODEL_VERSION_DIR --batch-sizes 1,8,32 [--intra 1 --inter 1]

Run under ``taskset -c 0`` to measure what one core can do; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np


def measure(path: str, batch_sizes: list[int], intra: int, inter: int, seconds: float, name: str | None = None
            ) -> dict[str, Any]:
    """``name``: a demo model's, whose example inputs (payloads.py: real JPEGs for image_jpeg) are used;
    else random inputs that fit the signature."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from server.core.vocabulary import example_inputs
    from server.runtime import TensorFlowModel, configure_tensorflow

    from .payloads import example_inputs as demo_inputs

    configure_tensorflow(intra, inter)
    model = TensorFlowModel(path)
    rows = []
    for size in batch_sizes:
        try:
            inputs = demo_inputs(name or "", size)
        except ValueError:
            inputs = example_inputs(model.signature, size, np.random.default_rng(0))
        for _ in range(3):
            model.run(inputs)
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline or len(latencies) < 5:
            start = time.perf_counter()
            model.run(inputs)
            latencies.append(time.perf_counter() - start)
        lat = np.array(latencies)
        rows.append({"batch_size": size, "rows_per_s": size / lat.mean(), "p50_ms": float(np.median(lat) * 1e3),
                     "mean_ms": float(lat.mean() * 1e3)})
    best = max(rows, key=lambda r: r["rows_per_s"])
    return {"intra": intra, "inter": inter, "by_batch_size": rows, "best": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    parser.add_argument("--intra", type=int, default=0)
    parser.add_argument("--inter", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--model", help="a demo model's name: its example inputs (else random ones)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    json.dump(measure(args.path, sizes, args.intra, args.inter, args.seconds, args.model), sys.stdout)


if __name__ == "__main__":
    main()
