"""Process workers on a live server with a real model: a worker killed under load is invisible to clients."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

import httpx
import numpy as np
import pytest

from server.client import AsyncClient

from ..observe import metric, until


def worker_pids(url: str) -> list[int]:
    (row,) = httpx.post(f"{url}/v2/repository/index").json()
    return list(row["worker_pids"])


async def test_killed_worker_is_replaced_and_its_batch_run_again(start_server, demo_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(demo_repository / "tabular", repo / "tabular")
    (repo / "tabular" / "model.yaml").write_text("max_batch_size: 16\nmax_queue_delay_ms: 1\n")
    server = start_server(repo, workers="process", process_devices=2, poll_interval=0)
    before = worker_pids(server.url)
    assert len(before) == 2
    rows = np.random.default_rng(9).standard_normal((1, 32)).astype(np.float32)
    answers: list[np.ndarray] = []
    failures: list[Exception] = []
    stop = asyncio.Event()

    async def traffic(client: AsyncClient) -> None:
        while not stop.is_set():
            try:
                answers.append((await client.predict("tabular", {"features": rows}))["score"])
            except Exception as exc:
                failures.append(exc)

    async with AsyncClient(server.url, retries=0) as client:
        expected = (await client.predict("tabular", {"features": rows}))["score"]
        tasks = [asyncio.ensure_future(traffic(client)) for _ in range(16)]
        await until(lambda: len(answers) >= 100, "traffic flowing")
        os.kill(before[0], signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_worker_restarts_total", model="tabular",
                                   reason="crash") == 1, "the worker's death noticed")
        await until(lambda: before[0] not in worker_pids(server.url) and "restarted" in server.log(),
                    "the worker restarted", timeout=120)
        served = len(answers)
        await until(lambda: len(answers) >= served + 100, "traffic after the restart")
        stop.set()
        await asyncio.gather(*tasks)
    assert failures == []
    assert all(np.allclose(answer, expected, rtol=1e-5, atol=1e-6) for answer in answers)  # batch sizes vary
    after = worker_pids(server.url)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    # Killed mid-batch (the batch is run again) or between batches (noticed at the next one): never seen.
    assert metric(server.url, "batchserve_lost_batches_total", model="tabular") in (0, 1)


async def test_worker_cores_pin_the_model_off_the_server_cores(start_server, demo_repository, tmp_path):
    """worker_cores: the worker process runs on those cores only; the server keeps its own."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores to tell the worker's from the server's")
    repo = tmp_path / "repo"
    shutil.copytree(demo_repository / "tabular", repo / "tabular")
    core = max(os.sched_getaffinity(0))
    server = start_server(repo, workers="process", worker_cores=str(core), poll_interval=0)
    (pid,) = worker_pids(server.url)
    assert os.sched_getaffinity(pid) == {core}
    assert os.sched_getaffinity(server.process.pid) == os.sched_getaffinity(0)
    rows = np.random.default_rng(3).standard_normal((2, 32)).astype(np.float32)
    async with AsyncClient(server.url) as client:
        assert (await client.predict("tabular", {"features": rows}))["score"].shape[0] == 2
