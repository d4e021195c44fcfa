"""The fault suite: each fault under steady concurrent load, the client-visible outcome asserted by count.

Faults come from the synthetic backend (a worker SIGKILLed mid-batch, a batch that hangs once, an
input that crashes the model, a leaking worker) and from the repository (a corrupt new version, a
version folder deleted). Events are ordered by the gate, the gauges and the counters, never by sleeping.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import signal
import time

import httpx
import pytest

from ..observe import hold_a_batch, metric, row_body, rows_queued, synthetic_repository, until, worker_pids
from ..steady_load import INFER, SteadyLoad
from .test_repository import place

pytestmark = pytest.mark.slow


async def progress(load: SteadyLoad, more: int = 40) -> None:
    """Wait until the load has had ``more`` answers since now."""
    target = load.ok + more
    await until(lambda: load.ok >= target, f"{more} more answers")


@pytest.mark.parametrize("frontends", [1, 2])
async def test_worker_sigkilled_mid_batch_is_invisible_to_clients(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate), poll_interval=0, workers="process",
                          frontends=frontends)
    async with SteadyLoad(server.url) as load:
        await progress(load)
        gate.touch()  # the next batch holds in the worker: it is mid-batch when killed
        await until(lambda: os.path.exists(f"{gate}.held"), "a batch held at the gate")
        (worker,) = worker_pids(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="crash") == 1,
                    "the restart counted")
        gate.unlink()
        await progress(load)
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    assert metric(server.url, "batchserve_lost_batches_total", model="syn") == 1
    assert worker_pids(server.process.pid) != [worker]
    assert "lost its worker" in server.log() and "running it again" in server.log()


async def test_a_hung_batch_is_killed_by_the_watchdog_and_run_again(start_server, tmp_path):
    hang = tmp_path / "hang"
    repository = synthetic_repository(tmp_path / "repo", batch_timeout_ms=1000,
                                      synthetic={"base_ms": 1.0, "hang_path": str(hang)})
    server = start_server(repository, poll_interval=0, workers="process")
    async with SteadyLoad(server.url) as load:
        await progress(load)
        hang.touch()  # the next batch removes it and never returns
        await until(lambda: metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="hang") == 1,
                    "the hung worker killed")
        await progress(load)
    assert not hang.exists()
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    assert metric(server.url, "batchserve_lost_batches_total", model="syn") == 1
    assert "ran longer than 1.0 s (batch_timeout_ms): killing its worker as hung" in server.log()


@pytest.mark.parametrize("frontends", [1, 2])
async def test_a_poison_request_fails_alone_and_is_quarantined(start_server, tmp_path, frontends):
    repository = synthetic_repository(tmp_path / "repo", max_batch_size=8,
                                      synthetic={"base_ms": 2.0, "crash_on_value": 13.0})
    server = start_server(repository, poll_interval=0, workers="process", frontends=frontends)
    async with SteadyLoad(server.url) as load, httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        await progress(load)
        poisoned = await http.post(INFER, json=row_body(13.0))
        await progress(load)
        crashes = metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="crash")
        refused = await http.post(INFER, json=row_body(13.0))  # a client's retry: refused, not run
        await progress(load)
    assert poisoned.status_code == 500
    # Alone in the batch: found by bisection. Grouped by a front end with other requests: the group's
    # members are resubmitted one by one, and the quarantine refuses this one. Either way only it fails.
    assert "crashed the model syn:1" in poisoned.json()["error"]
    assert refused.status_code == 500 and "quarantined for up to 300 s" in refused.json()["error"]
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="poison") == 2
    assert metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="crash") == crashes >= 2
    assert metric(server.url, "batchserve_requests_total", model="syn", code="500") == 2


async def test_a_worker_over_its_memory_limit_is_replaced_between_batches(start_server, tmp_path):
    repository = synthetic_repository(tmp_path / "repo", max_worker_rss_mb=400,
                                      synthetic={"base_ms": 1.0, "leak_mb_per_batch": 8.0})
    server = start_server(repository, poll_interval=0, workers="process", warmup=False)
    (first,) = worker_pids(server.process.pid)
    async with SteadyLoad(server.url) as load:
        await until(lambda: metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="rss") >= 1,
                    "the worker replaced for its memory", timeout=120)
        await progress(load)
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    assert first not in worker_pids(server.process.pid)
    assert metric(server.url, "batchserve_lost_batches_total", model="syn") == 0
    assert "(max_worker_rss_mb=400): replacing it between batches" in server.log()


async def test_queue_full_retry_after_is_the_predicted_drain_time(start_server, tmp_path):
    gate = tmp_path / "gate"
    repository = synthetic_repository(tmp_path / "repo", gate, max_batch_size=1, max_queue_size=4,
                                      synthetic={"per_row_ms": 600.0, "gate_path": str(gate)})
    server = start_server(repository, poll_interval=0, warmup=False)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        assert (await http.post(INFER, json=row_body(1.0))).status_code == 200  # one batch measured
        gate.touch()
        computing = await hold_a_batch(http, server.url, 2.0)
        queued = [asyncio.ensure_future(http.post(INFER, json=row_body(v))) for v in (3.0, 4.0, 5.0, 6.0)]
        await rows_queued(server.url, 4)
        rejected = await http.post(INFER, json=row_body(7.0))
        seconds_per_row = metric(server.url, "batchserve_compute_duration_seconds_sum", model="syn")
        gate.unlink()
        answers = await asyncio.gather(computing, *queued)
    assert rejected.status_code == 503
    assert rejected.headers["retry-after"] == str(math.ceil(4 * seconds_per_row)) != "1"
    assert [a.status_code for a in answers] == [200] * 5


async def test_a_corrupt_new_version_leaves_the_old_one_serving(start_server, tmp_path):
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    place(repo / "scale", 1, 2.0, staging)
    server = start_server(repo, poll_interval=0.2)
    path = "/v2/models/scale/infer"
    async with SteadyLoad(server.url, path=path, expect=lambda value: [2 * value] * 4,
                          body=lambda value: {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                                          "data": [value] * 4}]}) as load:
        await progress(load)
        corrupt = staging / "corrupt"
        corrupt.mkdir()
        (corrupt / "saved_model.pb").write_bytes(b"\x00corrupt")
        corrupt.rename(repo / "scale" / "2")
        await until(lambda: metric(server.url, "batchserve_model_ready", model="scale", version="2") == 0
                    and "2" in str(httpx.get(f"{server.url}/v1/models/scale").json()), "version 2 failed")
        await progress(load)
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    status = {s["version"]: s for s in httpx.get(f"{server.url}/v1/models/scale").json()["model_version_status"]}
    assert status["1"]["state"] == "AVAILABLE"
    assert status["2"]["state"] == "END" and "cannot load SavedModel" in status["2"]["status"]["error_message"]
    assert metric(server.url, "batchserve_model_ready", model="scale", version="1") == 1


async def test_a_served_version_folder_deleted_falls_back_without_errors(start_server, tmp_path):
    repo = synthetic_repository(tmp_path / "repo")
    (repo / "syn" / "2").mkdir()
    server = start_server(repo, poll_interval=0.2)
    async with SteadyLoad(server.url) as load:
        await progress(load)
        shutil.rmtree(repo / "syn" / "2")
        await until(lambda: [s["version"] for s in httpx.get(f"{server.url}/v1/models/syn").json()
                             ["model_version_status"]] == ["1"], "version 1 alone serving")
        await progress(load)
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    assert metric(server.url, "batchserve_model_ready", model="syn", version="1") == 1


def rows_inside(url: str) -> float:
    """Rows the batcher holds: queued, plus formed into batches and not yet answered."""
    queued = metric(url, "batchserve_queue_depth", model="syn")
    formed = metric(url, "batchserve_batch_size_sum", model="syn")
    answered = metric(url, "batchserve_inferences_total", model="syn")
    return queued + formed - answered


@pytest.mark.parametrize("frontends", [1, 2])
async def test_sigterm_under_load_answers_every_accepted_request(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate), poll_interval=0, frontends=frontends)
    async with SteadyLoad(server.url) as load:
        await progress(load)
        gate.touch()  # every client's request is then inside the server when SIGTERM comes
        inside: list[float] = []
        try:
            await until(lambda: inside.append(rows_inside(server.url)) or inside[-1] == load.clients,
                        "every client's request in the batcher")
        except AssertionError as error:
            raise AssertionError(f"{error}; rows inside, last seen: {inside[-5:]}; {load.outcomes}") from None
        server.process.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        gate.unlink()
        assert await asyncio.to_thread(server.process.wait, 60) in (0, -signal.SIGTERM)
    # Requests sent after SIGTERM were never accepted: the port closed, or the server closed the kept-alive
    # connection unread; each client's last request before it was answered.
    assert [f for f in load.failures if f[2] < terminated] == []
    assert {kind for kind, _ in load.outcomes.items() if kind != "ok"} <= {"ConnectError", "RemoteProtocolError",
                                                                            "ReadError"}
    assert load.ok >= 40 + load.clients
