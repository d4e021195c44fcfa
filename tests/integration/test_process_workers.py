"""Process workers on a live server: kill one under load; only its batch fails, the pool recovers."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time

import httpx
import numpy as np

from server.client import AsyncClient, ServiceUnavailableError


def worker_pids(url: str) -> list[int]:
    (row,) = httpx.post(f"{url}/v2/repository/index").json()
    return list(row["worker_pids"])


async def test_killed_worker_fails_only_its_batch_and_is_replaced(start_server, demo_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(demo_repository / "tabular", repo / "tabular")
    (repo / "tabular" / "model.yaml").write_text("max_batch_size: 16\nmax_queue_delay_ms: 1\n")
    server = start_server(repo, workers="process", process_devices=2, poll_interval=0)
    before = worker_pids(server.url)
    assert len(before) == 2

    rows = np.random.default_rng(9).standard_normal((1, 32)).astype(np.float32)
    ok, unavailable, other = 0, 0, []
    stop = asyncio.Event()

    async def traffic(client: AsyncClient) -> None:
        nonlocal ok, unavailable
        while not stop.is_set():
            try:
                await client.predict("tabular", {"features": rows})
                ok += 1
            except ServiceUnavailableError as exc:
                assert "died" in str(exc)
                unavailable += 1
            except Exception as exc:
                other.append(exc)

    async with AsyncClient(server.url, retries=0) as client:
        tasks = [asyncio.ensure_future(traffic(client)) for _ in range(16)]
        await asyncio.sleep(1.0)
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            pids = await asyncio.to_thread(worker_pids, server.url)
            if before[0] not in pids and len(pids) == 2 and "restarted" in server.log():
                break
        await asyncio.sleep(1.0)
        ok_before_end = ok
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*tasks)
    assert other == []
    assert unavailable <= 16  # at most the one batch the dead worker held
    assert ok > ok_before_end > 100
    after = worker_pids(server.url)
    assert len(after) == 2 and before[0] not in after and before[1] in after
    assert "worker on cpu:0 restarted" in server.log()
