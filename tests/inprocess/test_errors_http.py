"""Every failure answered with its status, JSON body and (503) Retry-After, through each route into the
server: bad bodies (400), unknown models and versions (404), bodies over the limit (413), a model that is
not ready or a full queue (503), a passed deadline (504), a failing model (500).

Failures that happen in the batcher come from a puppet batcher: the test fails the request it holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from batching import BatcherClosed, DeadlineExceeded, PoisonInput, QueueFull
from server.runtime import WorkerCrashed

from ..harness import Client, Served, serving
from ..payloads import BAD_SHAPE, INFER, row_body

PREDICT = "/v1/models/syn:predict"
BAD_REQUESTS = [
    (INFER, b"{", 400, "request body is not valid JSON: unexpected end of data: line 1 column 2 (char 1)"),
    (INFER, BAD_SHAPE, 400,
     "input 'features' expects shape [-1, 4], got [1, 3] (dimension 1 must be 4)"),
    (INFER, {"inputs": [{"name": "features", "datatype": "INT32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}, 400,
     "input 'features' expects FP32 (float32), got int32"),
    (INFER, {**row_body(1), "outputs": [{"name": "nope"}]}, 400, "unknown output 'nope'; the model has outputs ['total']"),
    (INFER, {**row_body(1), "parameters": {"timeout": -1}}, 400,
     "parameters.timeout must be a positive number of microseconds, got -1"),
    (INFER, {**row_body(1), "parameters": {"priority": 9}}, 400,
     "parameters.priority must be an integer in 0..3 (1 is highest, 0 default)"),
    (PREDICT, {"instances": [[1, 2, 3, 4]], "inputs": [[1, 2, 3, 4]]}, 400,
     "request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)"),
    (PREDICT, {"instances": [[1, 2, 3, 4]], "signature_name": "other"}, 400,
     "signature 'other' is not served for model 'syn'; served: ['serving_default']"),
    (PREDICT, {"instances": [[1, 2, 3]]}, 400, "input 'features' expects shape [-1, 4], got [1, 3] (dimension 1 must be 4)"),
    ("/v1/models/echo:predict", {"instances": [{"b64": "!!"}]}, 400, "input 'text': a {'b64': ...} value is not valid base64"),
    ("/v2/models/nope/infer", row_body(1), 404,
     "model 'nope' is not in the repository; models: ['broken', 'echo', 'mixed', 'syn']"),
    ("/v2/models/syn/versions/7/infer", row_body(1), 404, "model 'syn' has no version 7; versions: [1]"),
    ("/v1/models/nope:predict", {"instances": [[1, 2, 3, 4]]}, 404,
     "model 'nope' is not in the repository; models: ['broken', 'echo', 'mixed', 'syn']"),
    ("/v1/models/syn/labels/nope:predict", {"instances": [[1, 2, 3, 4]]}, 404,
     "model 'syn' has no version label 'nope'; labels: ['stable']"),
]


@pytest.mark.parametrize(("path", "body", "status", "error"), BAD_REQUESTS,
                         ids=[f"{status}-{i}" for i, (_, _, status, _) in enumerate(BAD_REQUESTS)])
async def test_bad_requests_are_answered_before_the_batcher(served: Served, http: Client, path: str, body: Any,
                                                            status: int, error: str) -> None:
    puppet = await served.puppet("syn")
    answer = await http.post(path, body)
    assert (answer.status, answer.json()) == (status, {"error": error})
    assert answer.headers["content-type"] == "application/json"
    assert "retry-after" not in answer.headers
    assert puppet.received == []  # refused before it was queued


@pytest.mark.parametrize("path", ["/v2/models/broken/infer", "/v1/models/broken:predict"])
async def test_a_model_that_failed_to_load_is_503_with_retry_after(http: Client, path: str) -> None:
    answer = await http.post(path, row_body(1) if path.startswith("/v2") else {"instances": [[1, 2, 3, 4]]})
    assert answer.status == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["error"].startswith("model 'broken' failed to load: ")
    assert answer.json()["error"].endswith("model.yaml: unknown key 'no_such_key'")


async def test_an_unknown_route_is_a_json_404(http: Client) -> None:
    answer = await http.get("/v3/nothing")
    assert (answer.status, answer.json()) == (404, {"error": "no route for this path: GET /v3/nothing"})


BATCHER_FAILURES = [
    (QueueFull("queue full: 4 rows waiting, 1 more would exceed max_queue_size=4", retry_after=2.2), 503, "3",
     "queue full: 4 rows waiting, 1 more would exceed max_queue_size=4"),
    (QueueFull("queue full: 4 rows waiting", retry_after=0.0), 503, "1", "queue full: 4 rows waiting"),
    (BatcherClosed("the batcher closed before this request ran"), 503, "1", "the batcher closed before this request ran"),
    (WorkerCrashed("worker process for syn on cpu:0 died (exit code 70)"), 503, "1",
     "worker process for syn on cpu:0 died (exit code 70)"),
    (DeadlineExceeded("the request's deadline passed before its batch ran"), 504, None,
     "the request's deadline passed before its batch ran"),
    (RuntimeError("out of memory\nand a second line"), 500, None, "model execution failed: RuntimeError: out of memory"),
    (PoisonInput("the input crashed the model syn:1"), 500, None, "the input crashed the model syn:1"),
]


@pytest.mark.parametrize("path", [INFER, PREDICT])
@pytest.mark.parametrize(("error", "status", "retry_after", "message"), BATCHER_FAILURES,
                         ids=[type(e).__name__ + str(i) for i, (e, *_) in enumerate(BATCHER_FAILURES)])
async def test_batcher_failures_map_to_status_body_and_retry_after(served: Served, http: Client, path: str,
                                                                   error: Exception, status: int,
                                                                   retry_after: str | None, message: str) -> None:
    puppet = await served.puppet("syn")
    answer = asyncio.ensure_future(http.post(path, row_body(1) if path == INFER else {"instances": [[1, 2, 3, 4]]}))
    [request] = await puppet.submitted(1)
    request.fail(error)
    answer = await answer
    assert (answer.status, answer.json()) == (status, {"error": message})
    assert answer.headers.get("retry-after") == retry_after


async def test_a_v2_timeout_is_the_requests_deadline(served: Served, http: Client) -> None:
    puppet = await served.puppet("syn")
    timed = asyncio.ensure_future(http.post(INFER, row_body(1, timeout_us=250_000)))
    [request] = await puppet.submitted(1)
    left = request.time_left()
    assert left is not None and 0 < left <= 0.25
    request.fail(DeadlineExceeded("the request's deadline passed before its batch ran"))
    assert (await timed).status == 504
    untimed = asyncio.ensure_future(http.post(INFER, row_body(2)))
    [request] = await puppet.submitted(1)
    assert request.time_left() is None  # no timeout asked, no default_timeout_ms: no deadline
    request.resolve({"total": [[2.0]]})
    assert (await untimed).json()["outputs"][0]["data"] == [2.0]


@pytest.fixture
async def limited(repository: Path) -> Any:
    async with serving(repository, max_body_bytes=2048) as served:
        yield served


@pytest.mark.parametrize("path", [INFER, PREDICT])
async def test_a_body_over_max_body_bytes_is_413(limited: Served, via: str, path: str) -> None:
    answer = await limited.client(via).post(path, b"x" * 4096, {"Content-Type": "application/json"})
    assert answer.status == 413
    assert answer.json() == {"error": "request body of 4096 bytes exceeds the limit of 2048 bytes"}


async def test_a_chunked_body_over_max_body_bytes_is_413_as_it_arrives(limited: Served) -> None:
    connection = await limited.connect()
    answer = await connection.request("POST", INFER, b"x" * 4096, {"Content-Type": "application/json"}, chunked=True)
    assert answer.status == 413
    assert answer.json() == {"error": "request body exceeds the limit of 2048 bytes"}
