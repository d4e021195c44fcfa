"""A restart without reloading: process workers outlive their engine, and the next engine adopts them.

Two front ends, process workers, the synthetic model. Docs: docs/reliability.md#engine-restarts.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import httpx
import pytest
import yaml

from ..observe import children, metric, row_body, synthetic_repository, until
from ..payloads import INFER
from ..steady_load import SteadyLoad
from .test_faults import progress

pytestmark = pytest.mark.slow
SHM = Path("/dev/shm")


def index(url: str) -> dict[str, list[int]]:
    """Each loaded model's worker pids, from the repository index."""
    rows = httpx.post(f"{url}/v2/repository/index", timeout=10).json()
    return {row["name"]: row["worker_pids"] for row in rows if row.get("worker_pids")}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def shared_memory(pids: list[int]) -> set[str]:
    """The /dev/shm files these processes map."""
    names = set()
    for pid in pids:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if " /dev/shm/" in line:
                names.add(line.split(" /dev/shm/", 1)[1].split()[0])
    return names


def engine_of(server) -> int:
    (engine,) = children(server.process.pid, "engine")
    return engine


async def test_a_new_engine_adopts_the_live_workers_and_starts_only_the_one_killed_with_it(start_server, tmp_path):
    """SIGKILL to the engine and one of its two workers under 8 closed-loop clients with 5 s deadlines: the next
    engine adopts the other worker (same pid, not loaded or warmed up again), starts one in place of the killed
    one, and no client sees an error. Then a normal shutdown leaves no worker and no shared memory behind."""
    server = start_server(synthetic_repository(tmp_path / "repo", instances_per_device=2), frontends=2,
                          workers="process", poll_interval=0)
    kept, killed = index(server.url)["syn"]
    assert server.log().count("worker for syn/1 on cpu:0 loaded") == 2
    async with SteadyLoad(server.url, body=lambda value: row_body(value, timeout_us=5_000_000)) as load:
        await progress(load)
        engine = engine_of(server)
        mapped = shared_memory([engine, kept, killed])  # the blocks of the engine that dies: removed too
        os.kill(engine, signal.SIGKILL)
        os.kill(killed, signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_engine_restarts_total") == 1, "the next engine serving")
        await progress(load)
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    workers = index(server.url)["syn"]
    assert kept in workers and killed not in workers and len(workers) == 2
    log = server.log()
    assert log.count("worker for syn/1 on cpu:0 loaded") == 3  # the killed one's replacement alone
    assert "model syn: adopted 1 of 2 workers from the engine before" in log
    assert "worker for syn/1 on cpu:0: a new engine connected" in log

    mapped |= shared_memory([engine_of(server), *workers])
    assert server.stop() == 0
    assert [pid for pid in workers if alive(pid)] == []
    assert sorted(name for name in mapped if (SHM / name).exists()) == []


async def test_the_next_engine_is_ready_without_running_a_batch(start_server, tmp_path):
    """The model's gate closed before the kill: the next engine is ready with the same worker while nothing
    waits at the gate, so it ran no warm-up batch (the worker kept the record of its warm-up)."""
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate), frontends=2, workers="process",
                          poll_interval=0)
    worker = index(server.url)["syn"]
    gate.touch()
    os.kill(engine_of(server), signal.SIGKILL)
    await until(lambda: metric(server.url, "batchserve_engine_restarts_total") == 1
                and httpx.get(f"{server.url}/v2/health/ready").status_code == 200, "the next engine ready")
    assert index(server.url)["syn"] == worker
    assert not gate.with_name("gate.held").exists()
    gate.unlink()
    assert httpx.post(f"{server.url}{INFER}", json=row_body(3.0)).json()["outputs"][0]["data"] == [3.0]


async def test_workers_of_changed_settings_of_a_gone_model_and_of_an_unloaded_one_stop(start_server, tmp_path):
    """While the engine is down, syn's model.yaml changes and model ``gone`` leaves the repository: the next
    engine starts a new worker for syn (the old one is stopped, not adopted) and stops gone's. Unloading syn
    then stops its worker too."""
    repository = synthetic_repository(tmp_path / "repo")
    shutil.copytree(repository / "syn", repository / "gone")
    server = start_server(repository, frontends=2, workers="process", poll_interval=0,
                          model_control_mode="explicit", load_models="syn,gone")
    before = index(server.url)
    config = yaml.safe_load((repository / "syn" / "model.yaml").read_text())
    config["synthetic"]["base_ms"] = 2.0
    (repository / "syn" / "model.yaml").write_text(yaml.safe_dump(config))
    shutil.rmtree(repository / "gone")
    os.kill(engine_of(server), signal.SIGKILL)
    await until(lambda: metric(server.url, "batchserve_engine_restarts_total") == 1
                and httpx.get(f"{server.url}/v2/health/ready").status_code == 200, "the next engine ready")
    assert httpx.post(f"{server.url}{INFER}", json=row_body(7.0)).json()["outputs"][0]["data"] == [7.0]
    (worker,) = index(server.url)["syn"]
    assert worker not in before["syn"]
    await until(lambda: not any(alive(pid) for pid in before["syn"] + before["gone"]), "the old workers stopped")
    log = server.log()
    assert "started with other settings or files" in log
    assert "stopped 1 worker(s) of the engine before that serve nothing now" in log
    assert "workers from the engine before" not in log  # the engine adopted none (it may connect to stop one)

    assert httpx.post(f"{server.url}/v2/repository/models/syn/unload", timeout=30).status_code == 200
    await until(lambda: not alive(worker), "the unloaded model's worker gone")
