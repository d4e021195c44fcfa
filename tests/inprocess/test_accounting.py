"""Every request is counted once in ``batchserve_requests_total{model,version,protocol,code}`` and once in the
duration histogram, whatever its outcome and whichever route it came by; read from the app's /metrics."""

from __future__ import annotations

import asyncio

from batching import DeadlineExceeded, QueueFull

from ..harness import Client, Served
from ..payloads import BAD_SHAPE, INFER, row_body


async def _counts(served: Served, name: str) -> dict[tuple[str, ...], float]:
    found: dict[tuple[str, ...], float] = {}
    for labels, value in await served.samples(name):
        if value:
            found[tuple(labels[k] for k in sorted(labels))] = value
    return found


async def test_each_request_is_counted_once_by_code(served: Served, http: Client) -> None:
    assert (await http.post(INFER, row_body(1))).status == 200
    assert (await http.post(INFER, row_body(2))).status == 200
    assert (await http.post(INFER, BAD_SHAPE)).status == 400
    assert (await http.post("/v2/models/syn/versions/9/infer", row_body(1))).status == 404
    assert (await http.post("/v2/models/nope/infer", row_body(1))).status == 404
    assert (await http.post("/v2/models/broken/infer", row_body(1))).status == 503
    assert (await http.post("/v1/models/syn:predict", {"instances": [[1, 2, 3, 4]]})).status == 200
    assert (await http.post("/v1/models/syn:predict", {"instances": [[1, 2, 3]]})).status == 400
    puppet = await served.puppet("syn")
    for outcome in (QueueFull("queue full", retry_after=1.0), DeadlineExceeded("deadline passed"), None):
        answer = asyncio.ensure_future(http.post(INFER, row_body(3)))
        [request] = await puppet.submitted(1)
        if outcome is None:
            request.resolve({"total": [[3.0]]})
        else:
            request.fail(outcome)
        await answer
    # code, model, protocol, version (labels in name order)
    assert await _counts(served, "batchserve_requests_total") == {
        ("200", "syn", "v2", "1"): 3, ("400", "syn", "v2", "1"): 1, ("503", "syn", "v2", "1"): 1,
        ("504", "syn", "v2", "1"): 1,
        ("404", "syn", "v2", ""): 1,  # no such version: counted under the model, without a version
        ("404", "_unknown", "v2", ""): 1,  # no such model: one series for every unknown name
        ("503", "broken", "v2", ""): 1,
        ("200", "syn", "tfserving", "1"): 1, ("400", "syn", "tfserving", "1"): 1,
    }
    assert await _counts(served, "batchserve_request_duration_seconds_count") == {
        ("syn", "v2", "1"): 6, ("syn", "v2", ""): 1, ("_unknown", "v2", ""): 1, ("broken", "v2", ""): 1,
        ("syn", "tfserving", "1"): 2,
    }


async def test_metadata_and_health_requests_are_not_inference_requests(served: Served, http: Client) -> None:
    for path in ("/v2", "/v2/models/syn", "/v2/models/syn/ready", "/v1/models/syn", "/v2/health/ready", "/metrics"):
        await http.get(path)
    assert await served.requests_by_code() == {}
