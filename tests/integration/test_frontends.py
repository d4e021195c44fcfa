"""Several front-end processes around one engine: real models, true metric totals, and faults under load."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import numpy as np
import pytest

from server.client import AsyncClient
from server.multiprocess.supervisor import usable_cores

from ..observe import children, hold_a_batch, metric, row_body, rows_queued, synthetic_repository, until
from ..payloads import INFER
from ..reference import direct


async def test_real_models_through_two_front_ends_equal_direct_calls(start_server, demo_repository):
    server = start_server(demo_repository, frontends=2, poll_interval=0)
    rng = np.random.default_rng(3)
    images = rng.random((24, 96, 96, 3), dtype=np.float32)
    rows = rng.standard_normal((64, 32)).astype(np.float32)
    async with AsyncClient(server.url, retries=0, timeout=60) as client, \
            AsyncClient(server.url, retries=0, timeout=60, binary=False) as json_client:
        image_outputs = await asyncio.gather(*(client.predict("image_classifier", {"image": images[i:i + 1]})
                                               for i in range(24)))
        tabular_outputs = await asyncio.gather(*(json_client.predict("tabular", {"features": rows[i:i + 2]})
                                                 for i in range(0, 64, 2)))
        spam = await client.predict("spam", {"text": np.array([b"win a free phone now", b"lunch?"], dtype=object)})
    want = direct(demo_repository / "image_classifier" / "1", image=images)["probabilities"]
    np.testing.assert_allclose(np.concatenate([o["probabilities"] for o in image_outputs]), want, rtol=1e-4, atol=1e-5)
    want = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(np.concatenate([o["score"] for o in tabular_outputs]), want, rtol=1e-4, atol=1e-5)
    assert spam["label"].tolist() == direct(demo_repository / "spam" / "1",
                                            text=np.array([b"win a free phone now", b"lunch?"], dtype=object))["label"].tolist()
    tfs = httpx.post(f"{server.url}/v1/models/tabular:predict", json={"instances": rows[:3].tolist()})
    np.testing.assert_allclose(np.array(tfs.json()["predictions"]).reshape(-1, 1), want[:3], rtol=1e-4, atol=1e-5)
    assert httpx.get(f"{server.url}/v2/models/tabular").json()["inputs"][0]["shape"] == [-1, 32]
    assert httpx.get(f"{server.url}/v1/models/spam").json()["model_version_status"][0]["state"] == "AVAILABLE"


async def test_metrics_add_up_over_front_ends(start_server, tmp_path):
    """K requests over many connections: the totals are exact, and the batches are exactly those run."""
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=4), frontends=2,
                          poll_interval=0)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as http:
        first = await hold_a_batch(http, server.url, 0)
        rest = [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(1, 10)]
        await rows_queued(server.url, 9)
        gate.unlink()
        answers = await asyncio.gather(first, *rest)
        bad = await http.post(INFER, json={"inputs": []})
    assert [r.status_code for r in answers] == [200] * 10 and bad.status_code == 400
    url = server.url
    assert metric(url, "batchserve_requests_total", model="syn", code="200") == 10
    assert metric(url, "batchserve_requests_total", model="syn", code="400") == 1
    assert metric(url, "batchserve_request_duration_seconds_count", model="syn") == 11
    # one batch of 1 (the model was idle), then the 9 queued rows as 4 + 4 + 1
    assert metric(url, "batchserve_batch_size_count", model="syn") == 4
    assert metric(url, "batchserve_batch_size_sum", model="syn") == 10
    assert metric(url, "batchserve_batches_total", model="syn", outcome="ok") == 4
    assert metric(url, "batchserve_model_ready", model="syn") == 1


async def test_killed_front_end_loses_only_its_requests_and_is_replaced(start_server, tmp_path):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), frontends=2,
                          poll_interval=0)
    gate.touch()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as http:
        first = await hold_a_batch(http, server.url, 0)
        requests = [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(1, 24)]
        await rows_queued(server.url, 23)
        victim = children(server.process.pid, "frontend")[0]
        os.kill(victim, signal.SIGKILL)
        # the engine drops the dead front end's queued requests: the gauge shows how many it held
        (left,) = await until(lambda: (d := metric(server.url, "batchserve_queue_depth", model="syn")) < 23 and (d,),
                              "the killed front end's requests leaving the queue")
        lost = 23 - left
        gate.unlink()
        results = await asyncio.gather(first, *requests, return_exceptions=True)
        answered = [r for r in results if isinstance(r, httpx.Response)]
        failed = [r for r in results if not isinstance(r, httpx.Response)]
        assert all(r.status_code == 200 for r in answered), [(r.status_code, r.text) for r in answered if r.status_code != 200]
        assert all(isinstance(f, httpx.TransportError) for f in failed)
        assert len(failed) == lost + (1 if isinstance(results[0], BaseException) else 0)
        assert 0 < len(failed) < 24
        await until(lambda: len(children(server.process.pid, "frontend")) == 2 and victim not in
                    children(server.process.pid, "frontend"), "a new front end in place of the killed one")
        await until(lambda: server.log().count("connected") >= 3, "the new front end connected to the engine")
        after = await asyncio.gather(*(http.post(INFER, json=row_body(i)) for i in range(16)))
    assert [r.status_code for r in after] == [200] * 16
    assert metric(server.url, "batchserve_queue_depth", model="syn") == 0


async def test_without_a_restart_hold_a_killed_engine_fails_its_requests_with_503_and_comes_back(start_server,
                                                                                                 tmp_path):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), frontends=2,
                          poll_interval=0, engine_restart_hold_s=0)  # (with one: tests/integration/test_engine_restart.py)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        held = [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(4)]
        await rows_queued(server.url, 3)
        engine = children(server.process.pid, "engine")[0]
        os.kill(engine, signal.SIGKILL)
        answers = await asyncio.gather(*held)
        assert [r.status_code for r in answers] == [503] * 4
        assert all("model engine stopped" in r.json()["error"] for r in answers)
        gate.unlink()
        await until(lambda: httpx.get(f"{server.url}/v2/health/ready").status_code == 200, "the engine back")
        again = await asyncio.gather(*(http.post(INFER, json=row_body(i)) for i in range(8)))
    assert [r.status_code for r in again] == [200] * 8
    assert engine not in children(server.process.pid, "engine")


@pytest.mark.parametrize("frontends", ["auto"])
def test_auto_front_ends_are_the_cores_left_after_the_engine(start_server, tmp_path, frontends):
    server = start_server(synthetic_repository(tmp_path), frontends=frontends, poll_interval=0)
    expected = max(1, usable_cores() - 1)
    assert len(children(server.process.pid, "frontend")) == (expected if expected > 1 else 0)
