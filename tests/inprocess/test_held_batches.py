"""A real Batcher whose batches wait for the test (tests/puppet.py: HeldBatches): requests queue behind a
held batch for real, so the queue's limit (503 with Retry-After), deadlines (504) and a client that leaves
(its rows leave the queue) are what the batcher does, observed over HTTP and on /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..harness import Served, request_bytes, serving, synthetic_model, until
from ..payloads import INFER, row_body


@pytest.fixture
async def one_row(tmp_path: Path) -> AsyncIterator[Served]:
    """``syn`` computing one row a batch, two rows queued at most."""
    async with serving(synthetic_model(tmp_path / "repo", "syn", max_batch_size=1, max_queue_size=2)) as served:
        yield served


async def test_a_full_queue_is_503_with_retry_after_and_the_queued_are_answered(one_row: Served) -> None:
    held, batcher = await one_row.hold("syn")
    http = one_row.client("asgi")
    computing = asyncio.ensure_future(http.post(INFER, row_body(0)))
    await held.held(1)
    queued = [asyncio.ensure_future(http.post(INFER, row_body(v))) for v in (1, 2)]
    await until(lambda: batcher.queued_rows == 2, "two rows queued")
    refused = await one_row.client("socket").post(INFER, row_body(3))
    assert refused.status == 503 and int(refused.headers["retry-after"]) >= 1
    assert refused.json() == {"error": "queue full: 2 rows waiting, 1 more would exceed max_queue_size=2"}
    for _ in range(3):
        (await held.held(1))[0].release()
    answers = [await a for a in (computing, *queued)]
    assert [a.json()["outputs"][0]["data"] for a in answers] == [[0.0], [1.0], [2.0]]
    assert await one_row.requests_by_code(model="syn") == {"200": 3, "503": 1}
    assert await one_row.metric("batchserve_rejected_total", model="syn", reason="queue_full") == 1


async def test_a_request_whose_deadline_passes_in_the_queue_is_504(one_row: Served) -> None:
    held, batcher = await one_row.hold("syn")
    http = one_row.client("socket")
    computing = asyncio.ensure_future(one_row.client("asgi").post(INFER, row_body(0)))
    [batch] = await held.held(1)
    expired = await http.post(INFER, row_body(1, timeout_us=20_000))  # answered while the batch is still held
    assert (expired.status, expired.json()) == (504, {"error": "the request's deadline passed while it was queued"})
    assert "retry-after" not in expired.headers
    batch.release()
    assert (await computing).status == 200
    assert [b.rows for b in held.batches] == [1]  # the expired request never reached the model
    assert await one_row.metric("batchserve_rejected_total", model="syn", reason="deadline") == 1


async def test_a_client_that_leaves_takes_its_rows_off_the_queue(one_row: Served) -> None:
    held, batcher = await one_row.hold("syn")
    computing = asyncio.ensure_future(one_row.client("asgi").post(INFER, row_body(0)))
    [batch] = await held.held(1)
    leaving = await one_row.connect()
    await leaving.send(request_bytes("POST", INFER, row_body(1)))
    await until(lambda: batcher.queued_rows == 1, "its row queued")
    leaving.close()
    await until(lambda: batcher.queued_rows == 0, "its row off the queue")
    batch.release()
    assert (await computing).json()["outputs"][0]["data"] == [0.0]
    assert [b.rows for b in held.batches] == [1]
    assert await one_row.requests_by_code(model="syn") == {"200": 1, "499": 1}
    assert await one_row.metric("batchserve_rejected_total", model="syn", reason="cancelled") == 1
    assert await one_row.metric("batchserve_queue_depth", model="syn") == 0


async def test_concurrent_requests_share_batches_and_get_their_own_rows(tmp_path: Path) -> None:
    async with serving(synthetic_model(tmp_path / "repo", "syn", max_batch_size=8)) as served:
        held, batcher = await served.hold("syn")
        http = served.client("asgi")
        first = asyncio.ensure_future(http.post(INFER, row_body(100)))
        [batch] = await held.held(1)  # computing: the next ones gather behind it
        rest = [asyncio.ensure_future(http.post(INFER, row_body(v, rows=2))) for v in range(4)]
        await until(lambda: batcher.queued_rows == 8, "four requests of two rows queued")
        batch.release()
        [together] = await held.held(1)
        together.release()
        assert (await first).json()["outputs"][0]["data"] == [100.0]
        assert [(await a).json()["outputs"][0]["data"] for a in rest] == [[float(v)] * 2 for v in range(4)]
        assert [b.rows for b in held.batches] == [1, 8]
        assert await served.metric("batchserve_batch_size_count", model="syn") == 2
