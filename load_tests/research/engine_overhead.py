"""The engine process's own CPU per relayed request, without HTTP: one front end's EngineClient
pumping requests through a real engine process serving a synthetic model.

    python -m load_tests.research.engine_overhead --concurrency 256 --duration 5 [--image]

The engine relays every front end's requests, so its CPU per request bounds how
far front ends scale: at C microseconds per request one engine core carries at
most 1e6 / C requests/s. Also reports this process's CPU per request: the front end's relay
(``EngineClient``) and the pumping loops, without HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..harness.local_server import ROOT, cpu_seconds, taskset
from .scaling import MODELS, write_repository


async def pump(engine_pid: int, socket_path: str, prefix: str, model: str, concurrency: int,
               seconds: float) -> dict[str, float]:
    from server.multiprocess.remote import EngineClient
    from server.settings import Settings

    client = EngineClient(Settings(), socket_path, prefix, 0)
    connection = asyncio.create_task(client.run())
    await client.announced.wait()
    inputs = {MODELS[model].input: np.random.default_rng(0).random((1, *MODELS[model].shape), dtype=np.float32)}
    mv = client.catalog.get(model)
    done = 0
    stop = time.monotonic() + 1.0 + seconds
    measuring = False
    start_cpu = start_wall = 0.0

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < stop:
            assert mv.batcher is not None
            await mv.batcher.submit(inputs)
            if measuring:
                done += 1

    tasks = [asyncio.create_task(loop()) for _ in range(concurrency)]
    await asyncio.sleep(1.0)  # warm-up
    measuring, start_cpu, start_wall = True, cpu_seconds(engine_pid), time.monotonic()
    start_own = time.process_time()
    await asyncio.gather(*tasks)
    cpu, wall = cpu_seconds(engine_pid) - start_cpu, time.monotonic() - start_wall
    own = time.process_time() - start_own
    await client.close()
    connection.cancel()
    return {"requests_per_s": done / wall, "engine_cpu_us_per_request": cpu / max(1, done) * 1e6,
            "engine_busy": cpu / wall, "frontend_cpu_us_per_request": own / max(1, done) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--model", choices=sorted(MODELS), default="tabular")
    parser.add_argument("--engine-core", default="0")
    args = parser.parse_args()
    import uvloop

    from server.settings import Settings

    with tempfile.TemporaryDirectory(prefix="engine-overhead-") as tmp:
        repository = write_repository(Path(tmp) / "repository", 0.52, 0.0077)
        socket_path, prefix = f"{tmp}/engine.sock", f"batchserve-bench-{os.getpid()}-"
        settings = Settings(model_repository=repository, log_level="warning")
        engine = subprocess.Popen([*taskset(args.engine_core), sys.executable, "-m", "server.multiprocess.process_main",
                                   "engine",
                                   "--settings", settings.model_dump_json(), "--socket", socket_path,
                                   "--shm-prefix", prefix], cwd=ROOT)
        try:
            result = uvloop.run(pump(engine.pid, socket_path, prefix, args.model, args.concurrency, args.duration))
        finally:
            engine.terminate()
            engine.wait(30)
    print(json.dumps({"model": args.model, "concurrency": args.concurrency, **result}, indent=1))


if __name__ == "__main__":
    main()
