"""413, 503 + Retry-After, 504, and graceful shutdown, with one front end and with two around the engine.

Events are ordered by what the server shows: a synthetic model held by a gate
file, and the in-flight and queue-depth gauges.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from ..observe import hold_a_batch, metric, row_body, rows_queued, synthetic_repository, until
from ..payloads import INFER


@pytest.fixture(params=[1, 2], ids=["1-frontend", "2-frontends"])
def frontends(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_body_over_the_limit_is_413_before_parsing(start_server, tmp_path, frontends):
    server = start_server(synthetic_repository(tmp_path), max_body_bytes=100_000, poll_interval=0,
                          frontends=frontends)
    response = httpx.post(f"{server.url}{INFER}", content=b"x" * 200_000)
    assert response.status_code == 413
    assert "exceeds the limit of 100000 bytes" in response.json()["error"]


async def test_full_queue_is_503_with_retry_after(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_queue_size=8, max_batch_size=1),
                          poll_interval=0, frontends=frontends)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        computing = await hold_a_batch(http, server.url, 0)
        queued = [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(1, 9)]
        await rows_queued(server.url, 8)
        rejected = await http.post(INFER, json=row_body(99))
        assert rejected.status_code == 503 and rejected.headers["retry-after"] == "1"
        assert "queue full: 8 rows waiting, 1 more would exceed max_queue_size=8" in rejected.json()["error"]
        gate.unlink()
        answers = await asyncio.gather(computing, *queued)
    assert [r.status_code for r in answers] == [200] * 9
    assert [r.json()["outputs"][0]["data"] for r in answers] == [[float(i)] for i in range(9)]
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="queue_full") == 1
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 9


async def test_deadline_passed_in_the_queue_is_504_and_never_computed(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), poll_interval=0,
                          frontends=frontends)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        computing = await hold_a_batch(http, server.url, 1)
        late = await http.post(INFER, json=row_body(2, timeout_us=1000))
        assert late.status_code == 504 and "deadline" in late.json()["error"]
        gate.unlink()
        assert (await computing).status_code == 200
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="deadline") == 1
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 1  # the late one never ran


async def test_sigterm_answers_every_accepted_request(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate), poll_interval=0, frontends=frontends)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
        computing = await hold_a_batch(http, server.url, 0)
        queued = [asyncio.ensure_future(http.post(INFER, json=row_body(i))) for i in range(1, 12)]
        await rows_queued(server.url, 11)
        server.process.send_signal(signal.SIGTERM)
        await until(lambda: server.log().count("Shutting down") == frontends, "every front end shutting down")
        gate.unlink()
        answers = await asyncio.gather(computing, *queued)
    assert [r.status_code for r in answers] == [200] * 12
    assert [r.json()["outputs"][0]["data"] for r in answers] == [[float(i)] for i in range(12)]
    assert server.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert "every accepted request answered" in server.log()
