"""dispatch_when_idle against the event loop's CPU: a lone request waits for company while the loop's CPU is
saturated (idle_dispatch_busy_share), and is sent at once while it is not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.runtime import saturation

from ..harness import serving, synthetic_model, until
from ..payloads import INFER, row_body

# a full batch is two rows; a lone row would otherwise wait a minute for company
HELD = {"max_batch_size": 2, "max_queue_delay_ms": 60_000}


def _batches(served) -> tuple[int, int]:
    mv = served.app.state.service.repository.get("syn", None)
    return mv.batcher.queued_rows, mv.batcher.inflight_batches


async def test_a_lone_request_waits_for_company_while_the_loops_cpu_is_saturated(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saturation, "WINDOW", 0.0)  # a reading each time the batcher asks
    # any CPU the loop used since the last reading is "saturated": the request's own handling is
    async with serving(synthetic_model(tmp_path / "repo", "syn", **HELD), idle_dispatch_busy_share=1e-9) as served:
        first = asyncio.ensure_future(served.client("socket").post(INFER, row_body(1)))
        await until(lambda: _batches(served) == (1, 0), "the lone row queued, held with the model idle")
        second = await served.client("socket").post(INFER, row_body(2))  # the second row fills the batch
        assert second.status == 200 and second.json()["outputs"][0]["data"] == [2.0]
        answer = await first
        assert answer.status == 200 and answer.json()["outputs"][0]["data"] == [1.0]
        assert await served.metric("batchserve_batch_size_count", model="syn") == 1
        assert await served.metric("batchserve_batch_size_sum", model="syn") == 2


async def test_a_lone_request_leaves_at_once_when_the_setting_is_off(tmp_path: Path) -> None:
    async with serving(synthetic_model(tmp_path / "repo", "syn", **HELD), idle_dispatch_busy_share=0) as served:
        answer = await served.client("socket").post(INFER, row_body(1))
        assert answer.status == 200 and answer.json()["outputs"][0]["data"] == [1.0]
        assert await served.metric("batchserve_batch_size_sum", model="syn") == 1
