"""The engine process SIGKILLed under two front ends with process workers: no request is lost or answered twice.

Requests in a batch and queued when the engine dies, and new ones while it restarts, are answered by the next
engine, each with its own row (the synthetic model answers each row's first value). The restart is held by the
synthetic model's gate: a new engine adopts the live worker, whose batch of the engine before waits at it, or
(where the worker was killed with the engine) starts a new one, whose warm-up waits at it; so the hold is there
to observe and to act in. Docs: docs/reliability.md#engine-restarts.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal

import httpx
import pytest

from ..observe import children, hold_a_batch, metric, row_body, rows_queued, synthetic_repository, until, worker_pids
from ..payloads import INFER
from ..steady_load import SteadyLoad
from .test_faults import progress

pytestmark = pytest.mark.slow
WAITING = "batchserve_engine_waiting_requests"


def values(answers: list[httpx.Response]) -> list[float | str]:
    """Each answer's value (200s only: anything else fails the comparison with its status and body)."""
    return [r.json()["outputs"][0]["data"][0] if r.status_code == 200 else f"{r.status_code} {r.text}" for r in answers]


async def killed_with_work(server, http: httpx.AsyncClient, queued: int,
                           with_worker: bool = False) -> list[asyncio.Future[httpx.Response]]:
    """Row 0 in a batch at the gate and rows 1..queued queued, then the engine SIGKILLed (and its worker, with
    ``with_worker``): the pending answers."""
    sent = [await hold_a_batch(http, server.url, 0)]
    sent += [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(1, queued + 1)]
    await rows_queued(server.url, queued)
    (engine,) = children(server.process.pid, "engine")
    os.kill(engine, signal.SIGKILL)
    if with_worker:
        for worker in worker_pids(server.process.pid):
            os.kill(worker, signal.SIGKILL)
    return sent


def start(start_server, tmp_path, **settings):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), frontends=2,
                          workers="process", poll_interval=0, engine_restart_hold_s=60, **settings)
    gate.touch()
    return server, gate


async def test_a_killed_engines_requests_and_new_ones_are_answered_once_by_the_next(start_server, tmp_path):
    """... also when the next engine is killed too while it loads (the worker was killed with the first: the
    next one starts a new worker, whose warm-up waits at the gate; the third adopts that one, and warms it)."""
    server, gate = start(start_server, tmp_path)
    async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:  # both front ends
        sent = await killed_with_work(server, http, 7, with_worker=True)
        await until(lambda: metric(server.url, WAITING) == 8, "the 8 requests in flight waiting for the next engine")
        sent += [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(8, 12)]
        await until(lambda: metric(server.url, WAITING) == 12, "4 new requests held")
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503  # not ready while it restarts
        # the next engine loads (its warm-up waits at the gate) with both front ends joined: killed too
        await until(lambda: server.log().count(" connected") >= 4, "both front ends joined to the loading engine")
        (loading,) = children(server.process.pid, "engine")
        os.kill(loading, signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_engine_restarts_total") == 2, "a third engine loading")
        assert metric(server.url, WAITING) == 12
        gate.unlink()  # the third engine's warm-up passes the gate: it is ready and gets them
        answers = await asyncio.gather(*sent)
    assert values(answers) == [float(i) for i in range(12)]
    url = server.url
    assert metric(url, "batchserve_engine_restarts_total") == 2
    assert metric(url, "batchserve_engine_replayed_requests_total") == 8
    assert metric(url, "batchserve_engine_held_requests_total") == 4
    assert metric(url, WAITING) == 0
    assert metric(url, "batchserve_requests_total", model="syn", code="200") == 12  # every request answered once
    assert re.search(r"the model engine is back after \d+\.\d+ s; \d+ of the \d+ requests", server.log())


async def test_a_second_kill_during_the_replay(start_server, tmp_path):
    server, gate = start(start_server, tmp_path, warmup=False)  # no warm-up: the next engine is ready at once
    async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:
        sent = await killed_with_work(server, http, 5)
        # the next engine has them all again: one in a batch at the gate, five queued
        await until(lambda: metric(server.url, "batchserve_engine_replayed_requests_total") == 6
                    and metric(server.url, "batchserve_queue_depth", model="syn") == 5
                    and metric(server.url, "batchserve_inflight_batches", model="syn") == 1, "the replay queued")
        (engine,) = children(server.process.pid, "engine")
        os.kill(engine, signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_engine_replayed_requests_total") == 12
                    and metric(server.url, "batchserve_queue_depth", model="syn") == 5, "the second replay queued")
        gate.unlink()
        answers = await asyncio.gather(*sent)
    assert values(answers) == [float(i) for i in range(6)]
    assert metric(server.url, "batchserve_engine_restarts_total") == 2
    assert metric(server.url, "batchserve_requests_total", model="syn", code="200") == 6


async def test_sigterm_during_a_hold_drains_what_waits(start_server, tmp_path):
    server, gate = start(start_server, tmp_path)
    async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:
        sent = await killed_with_work(server, http, 3)
        await until(lambda: metric(server.url, WAITING) == 4, "the requests waiting for the next engine")
        server.process.send_signal(signal.SIGTERM)
        await until(lambda: server.listeners() == 0, "the front ends draining (no longer listening)")
        gate.unlink()  # the next engine becomes ready within the drain: what waited is served
        answers = await asyncio.gather(*sent)
    assert values(answers) == [0.0, 1.0, 2.0, 3.0]
    assert await asyncio.to_thread(server.process.wait, 60) == 0


async def test_an_engine_sigkill_under_load_is_invisible_to_clients_with_a_5_s_deadline(start_server, tmp_path):
    server = start_server(synthetic_repository(tmp_path / "repo"), frontends=2, workers="process", poll_interval=0)
    async with SteadyLoad(server.url, body=lambda value: row_body(value, timeout_us=5_000_000)) as load:
        await progress(load)
        (engine,) = children(server.process.pid, "engine")
        os.kill(engine, signal.SIGKILL)
        await until(lambda: metric(server.url, "batchserve_engine_restarts_total") == 1, "the next engine serving")
        await progress(load)
    assert load.outcomes["ok"] == sum(load.outcomes.values()), load.failures
    assert metric(server.url, "batchserve_engine_replayed_requests_total") \
        + metric(server.url, "batchserve_engine_held_requests_total") > 0  # the clients' requests waited for it
