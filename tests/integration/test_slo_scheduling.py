"""scheduling: slo end to end, with one front end and with two around the engine.

A synthetic model (100 ms a batch, held by a gate file) makes the predictions
certain: a request behind N queued rows cannot finish before N + 1 batches have
run, whatever the timing of the test. Which rows are ahead of a request is the
queue's order: higher priority first, then the earlier deadline. Events are
ordered by the gauges.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from ..observe import hold_a_batch, metric, row_body, rows_queued, synthetic_repository, until
from ..payloads import INFER


def body(value: float, timeout_ms: float, priority: int = 0) -> dict[str, Any]:
    request = row_body(value, timeout_us=int(timeout_ms * 1000))
    if priority:
        request["parameters"]["priority"] = priority
    return request


@pytest.mark.parametrize("frontends", [1, 2], ids=["1-frontend", "2-frontends"])
async def test_a_request_predicted_late_is_refused_at_once_and_one_ahead_by_priority_is_not(
        start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    repo = synthetic_repository(tmp_path / "repo", gate, max_batch_size=1, slo_ms=10_000, scheduling="slo",
                                synthetic={"base_ms": 100.0, "gate_path": str(gate)})
    server = start_server(repo, poll_interval=0, frontends=frontends)
    # seeded from the warm-up: one batch of one row took the model's 100 ms (plus the hop to the worker)
    seeded = metric(server.url, "batchserve_predicted_compute_seconds", model="syn", batch_size="1")
    assert 0.1 <= seeded < 0.3
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        computing = await hold_a_batch(http, server.url, 0)
        queued = [asyncio.ensure_future(http.post(INFER, json=body(i, timeout_ms=60_000, priority=1)))
                  for i in range(1, 13)]
        await rows_queued(server.url, 12)
        # 12 rows of a higher priority ahead of it (>= 1.2 s), a deadline 1 s away: refused now, not answered late
        refused = await http.post(INFER, json=body(99, timeout_ms=1000))
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "after its deadline" in refused.json()["error"]
        # the same deadline at their priority: earlier than theirs (10 s), so nothing is ahead: admitted, runs next
        urgent = asyncio.ensure_future(http.post(INFER, json=body(77, timeout_ms=1000, priority=1)))
        await rows_queued(server.url, 13)
        gate.unlink()
        answers = await asyncio.gather(computing, urgent, *queued)
    assert [r.status_code for r in answers] == [200] * 14
    assert answers[1].json()["outputs"][0]["data"] == [77.0]
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="predicted_late") == 1
    assert metric(server.url, "batchserve_slo_requests_total", model="syn", outcome="rejected") == 1
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 14
    # the cost model kept learning: 14 more batches of 100 ms
    assert 0.1 <= metric(server.url, "batchserve_predicted_compute_seconds", model="syn", batch_size="1") < 0.3


@pytest.mark.parametrize(("scheduling", "status", "reason"), [("slo", 503, "predicted_late"), ("fixed", 504, "deadline")])
async def test_the_server_default_scheduling_applies_where_model_yaml_is_silent(start_server, tmp_path, scheduling,
                                                                               status, reason):
    gate = tmp_path / "gate"
    repo = synthetic_repository(tmp_path / "repo", gate, max_batch_size=1,
                                synthetic={"base_ms": 100.0, "gate_path": str(gate)})
    server = start_server(repo, poll_interval=0, scheduling=scheduling, slo_ms=10_000)
    gate.touch()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        computing = await hold_a_batch(http, server.url, 0)
        ahead = asyncio.ensure_future(http.post(INFER, json=body(2, timeout_ms=60_000, priority=1)))
        await rows_queued(server.url, 1)
        # a batch computes and one of a higher priority waits: at 100 ms a batch, a 50 ms deadline cannot be
        # met. slo refuses it at once (503); fixed queues it until the deadline passes (504)
        late = await http.post(INFER, json=body(1, timeout_ms=50))
        assert late.status_code == status
        await until(lambda: metric(server.url, "batchserve_rejected_total", model="syn", reason=reason) == 1,
                    f"one rejection for {reason}")
        gate.unlink()
        assert [(await r).status_code for r in (computing, ahead)] == [200, 200]
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 2
