"""instances_per_device with process workers: several worker processes per device, each with a batch in flight.

The synthetic model's gate holds batches in the model; the file ``gate.held.PID`` shows that worker process PID
holds one, so the tests see which workers compute at once, and order every step by that, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..observe import metric, row_body, synthetic_repository, until
from ..payloads import INFER

pytestmark = pytest.mark.slow
HELD_MS = 60_000  # batch_timeout_ms: a batch waiting at the gate is never taken for a hung one


def index_row(url: str) -> dict[str, Any]:
    (row,) = httpx.post(f"{url}/v2/repository/index", timeout=10).json()
    return dict(row)


def holding(gate: Path, pids: Iterable[int]) -> set[int]:
    """Which of ``pids`` hold a batch at the gate now."""
    marked = {int(marker.name.rpartition(".")[2]) for marker in gate.parent.glob(f"{gate.name}.held.*")}
    return marked & set(pids)


async def hold(http: httpx.AsyncClient, gate: Path, pids: list[int], value: float) -> asyncio.Future[Any]:
    """Send one row of ``value``; return its pending response once one more of ``pids`` holds a batch."""
    before = len(holding(gate, pids))
    pending = asyncio.ensure_future(http.post(INFER, json=row_body(value)))
    await until(lambda: len(holding(gate, pids)) == before + 1, f"{before + 1} workers holding a batch each")
    return pending


def answer(response: httpx.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return list(response.json()["outputs"][0]["data"])


async def test_two_instances_on_one_device_compute_at_once_and_restart_alone(start_server, tmp_path):
    gate = tmp_path / "gate"
    repository = synthetic_repository(tmp_path / "repo", gate, instances_per_device=2, batch_timeout_ms=HELD_MS)
    server = start_server(repository, workers="process", poll_interval=0)
    row = index_row(server.url)
    pids = row["worker_pids"]
    assert (row["device"], row["instances"], len(set(pids))) == ("cpu:0", 2, 2)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        pending = [await hold(http, gate, pids, 1.0), await hold(http, gate, pids, 2.0)]
        # Two batches in the model at once on one device, one in each worker process.
        assert holding(gate, pids) == set(pids)
        assert metric(server.url, "batchserve_inflight_batches", model="syn") == 2
        survivor, victim = pids
        os.kill(victim, signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="crash") == 1,
                    "the crash counted")
        # The replacement starts (and warms up, held at the gate too) while the survivor still holds its batch.
        await until(lambda: len(holding(gate, index_row(server.url)["worker_pids"])) == 2,
                    "the replacement and the survivor both in the model")
        gate.unlink()
        assert [answer(response) for response in await asyncio.gather(*pending)] == [[1.0], [2.0]]
        replaced = index_row(server.url)["worker_pids"]
        assert survivor in replaced and victim not in replaced and len(replaced) == 2
        assert answer(await http.post(INFER, json=row_body(3.0))) == [3.0]
    assert metric(server.url, "batchserve_worker_restarts_total", model="syn") == 1  # the survivor never was
    assert metric(server.url, "batchserve_lost_batches_total", model="syn") == 1  # the victim's, run again


async def test_two_devices_of_two_instances_give_the_batcher_four_slots(start_server, tmp_path):
    gate = tmp_path / "gate"
    repository = synthetic_repository(tmp_path / "repo", gate, instances_per_device=2, batch_timeout_ms=HELD_MS)
    server = start_server(repository, workers="process", process_devices=2, poll_interval=0)
    row = index_row(server.url)
    pids = row["worker_pids"]
    assert (row["device"], row["instances"], len(set(pids))) == ("cpu:0,cpu:1", 4, 4)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        pending = [await hold(http, gate, pids, float(value)) for value in range(1, 5)]
        assert metric(server.url, "batchserve_inflight_batches", model="syn") == 4
        pending.append(asyncio.ensure_future(http.post(INFER, json=row_body(5.0))))
        # Every slot is taken: the fifth waits in the queue, not in a worker.
        await until(lambda: metric(server.url, "batchserve_queue_depth", model="syn") == 1, "the fifth row queued")
        assert metric(server.url, "batchserve_inflight_batches", model="syn") == 4
        gate.unlink()
        assert [answer(response) for response in await asyncio.gather(*pending)] == [[1.0], [2.0], [3.0], [4.0],
                                                                                 [5.0]]
