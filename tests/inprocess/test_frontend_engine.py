"""One front end around the engine, both in this process (``--frontends N``'s layout without the processes):
requests cross the front end's shared-memory arena and the notice channel to the engine's batchers, and
answers, errors, limits and cancellation come back as with one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ..harness import ECHO, MIXED, Served, broken_model, request_bytes, serving, synthetic_model, until
from ..payloads import BAD_SHAPE, INFER, binary_body, row_body, split_binary


@pytest.fixture
async def front_end(tmp_path: Path) -> AsyncIterator[Served]:
    root = tmp_path / "repo"
    synthetic_model(root, "syn", max_batch_size=1, max_queue_size=2)
    synthetic_model(root, "mixed", MIXED)
    synthetic_model(root, "echo", ECHO)
    async with serving(broken_model(root), frontends=True) as served:
        yield served


async def test_both_protocols_through_the_engine(front_end: Served) -> None:
    http = front_end.client("socket")
    answer = await http.post(INFER, row_body(2.5, rows=1))
    assert answer.json()["outputs"] == [{"name": "total", "datatype": "FP32", "shape": [1, 1], "data": [2.5]}]
    rows = np.array([[1, 0, 0, 0]], np.float32)
    body, headers = binary_body({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                                             "parameters": {"binary_data_size": rows.nbytes}}],
                                 "parameters": {"binary_data_output": True}}, rows.tobytes())
    header, data = split_binary(await http.post(INFER, body, headers))
    assert header["outputs"][0]["shape"] == [1, 1] and np.frombuffer(data, np.float32).tolist() == [1.0]
    predicted = await http.post("/v1/models/mixed:predict", {"instances": [{"a": [1, 2, 3], "b": 4}]})
    assert predicted.json() == {"predictions": [{"label": "5.0", "total": 5.0}]}  # a string output, in the notice
    echoed = await http.post("/v1/models/echo:predict", {"instances": ["a", "b"]})  # string inputs, in the notice
    assert echoed.json() == {"predictions": [{"b64": "MC4w"}, {"b64": "MC4w"}]}


async def test_concurrent_requests_each_get_their_own_rows(front_end: Served) -> None:
    http = front_end.client("asgi")
    answers = await asyncio.gather(*(http.post("/v2/models/mixed/infer", {"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [v, 0, 0]},
        {"name": "b", "datatype": "INT32", "shape": [1], "data": [1]}]}) for v in range(12)))
    assert [{o["name"]: o["data"] for o in a.json()["outputs"]}["total"] for a in answers] == [[v + 1.0] for v in range(12)]
    assert await front_end.requests_by_code(model="mixed") == {"200": 12}


async def test_errors_through_the_front_ends_catalog(front_end: Served) -> None:
    http = front_end.client("socket")
    missing = await http.post("/v2/models/nope/infer", row_body(1))
    assert (missing.status, missing.json()["error"]) == (
        404, "model 'nope' is not in the repository; models: ['broken', 'echo', 'mixed', 'syn']")
    bad = await http.post(INFER, BAD_SHAPE)
    assert bad.status == 400
    broken = await http.post("/v2/models/broken/infer", row_body(1))
    assert broken.status == 503 and broken.headers["retry-after"] == "5"
    assert (await http.get("/v2/models/syn")).json()["platform"] == "synthetic"


async def test_the_engines_full_queue_is_503_with_retry_after(front_end: Served) -> None:
    held, batcher = await front_end.hold("syn")
    http = front_end.client("asgi")
    computing = asyncio.ensure_future(http.post(INFER, row_body(0)))
    await held.held(1)
    queued = [asyncio.ensure_future(http.post(INFER, row_body(v))) for v in (1, 2)]
    await until(lambda: batcher.queued_rows == 2, "two rows queued in the engine")
    refused = await front_end.client("socket").post(INFER, row_body(3))
    assert (refused.status, refused.json()) == (
        503, {"error": "queue full: 2 rows waiting, 1 more would exceed max_queue_size=2"})
    assert int(refused.headers["retry-after"]) >= 1
    for _ in range(3):
        (await held.held(1))[0].release()
    assert [(await a).json()["outputs"][0]["data"] for a in (computing, *queued)] == [[0.0], [1.0], [2.0]]
    assert await front_end.requests_by_code(model="syn") == {"200": 3, "503": 1}


async def test_a_deadline_passing_in_the_engines_queue_is_504(front_end: Served) -> None:
    held, _ = await front_end.hold("syn")
    computing = asyncio.ensure_future(front_end.client("asgi").post(INFER, row_body(0)))
    [batch] = await held.held(1)
    expired = await front_end.client("socket").post(INFER, row_body(1, timeout_us=100_000))
    assert expired.status == 504  # while it was queued (or, on a machine stalled that long, before)
    assert expired.json()["error"].startswith("the request's deadline passed ")
    batch.release()
    assert (await computing).status == 200
    assert [b.rows for b in held.batches] == [1]


async def test_a_client_with_a_deadline_that_leaves_takes_its_rows_off_the_engines_queue(front_end: Served) -> None:
    held, batcher = await front_end.hold("syn")
    computing = asyncio.ensure_future(front_end.client("asgi").post(INFER, row_body(0)))
    [batch] = await held.held(1)
    leaving = await front_end.connect()
    await leaving.send(request_bytes("POST", INFER, row_body(1, timeout_us=30_000_000)))  # its own deadline: alone
    await until(lambda: batcher.queued_rows == 1, "its row queued in the engine")
    leaving.close()
    await until(lambda: batcher.queued_rows == 0, "its row off the engine's queue")
    batch.release()
    assert (await computing).status == 200
    assert [b.rows for b in held.batches] == [1]
    assert await front_end.requests_by_code(model="syn") == {"200": 1, "499": 1}


async def test_a_grouped_request_whose_client_leaves_is_computed_and_its_answer_dropped(front_end: Served) -> None:
    held, batcher = await front_end.hold("syn")
    computing = asyncio.ensure_future(front_end.client("asgi").post(INFER, row_body(0)))
    [batch] = await held.held(1)
    leaving = await front_end.connect()
    await leaving.send(request_bytes("POST", INFER, row_body(1)))  # no deadline: travels in a group
    await until(lambda: batcher.queued_rows == 1, "its row queued in the engine")
    leaving.close()
    await until(lambda: front_end.requests_by_code(model="syn"), "the front end counting the leaver")
    assert batcher.queued_rows == 1  # still queued: its group's entry is the engine's
    batch.release()
    (await held.held(1))[0].release()
    assert (await computing).status == 200
    assert [b.rows for b in held.batches] == [1, 1]
    assert await front_end.requests_by_code(model="syn") == {"200": 1, "499": 1}
