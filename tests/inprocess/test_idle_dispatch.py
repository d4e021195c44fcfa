"""dispatch_when_idle against the event loop's CPU: while the loop's CPU is saturated and requests keep coming, an
idle model waits for company (idle_dispatch_busy_share); a request nobody follows is sent at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.runtime import saturation

from ..harness import Served, serving, synthetic_model, until
from ..payloads import INFER, row_body


def _model(root: Path, gate: Path) -> Path:
    """A full batch is two rows; a lone row would otherwise wait a minute for company. The gate holds a batch."""
    return synthetic_model(root, "syn", max_batch_size=2, max_queue_delay_ms=60_000, instances_per_device=1,
                           synthetic={"base_ms": 0.0, "gate_path": str(gate)})


def _queue(served: Served) -> tuple[int, int]:
    batcher = served._version("syn", None).batcher
    return batcher.queued_rows, batcher.inflight_batches


def _post(served: Served, value: float) -> asyncio.Future:
    return asyncio.ensure_future(served.client("socket").post(INFER, row_body(value)))


def _gate(gate: Path, shut: bool) -> None:
    gate.touch() if shut else gate.unlink()


async def _through_a_held_batch(served: Served, gate: Path) -> list[asyncio.Future]:
    """The first request alone at the gate, a second queued behind it; the gate opens."""
    _gate(gate, shut=True)
    first = _post(served, 1.0)
    await until(lambda: Path(f"{gate}.held").exists(), "the lone request's batch at the gate")
    second = _post(served, 2.0)
    await until(lambda: _queue(served) == (1, 1), "the second request queued behind the held batch")
    _gate(gate, shut=False)
    await first
    return [first, second]


async def test_an_idle_model_waits_for_company_while_requests_keep_coming_to_a_saturated_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(saturation, "WINDOW", 0.0)  # a reading each time a batcher asks
    gate = tmp_path / "gate"
    # a share this small: any CPU the loop used since the last reading is "saturated"
    async with serving(_model(tmp_path / "repo", gate), idle_dispatch_busy_share=1e-9) as served:
        answers = await _through_a_held_batch(served, gate)  # the first left alone: nobody followed it then
        await until(lambda: _queue(served) == (1, 0), "the second request held for company, the model idle")
        answers.append(_post(served, 3.0))  # its company: a full batch
        values = [(await answer).json()["outputs"][0]["data"] for answer in answers]
        assert values == [[1.0], [2.0], [3.0]]
        assert await served.metric("batchserve_batch_size_count", model="syn") == 2
        assert await served.metric("batchserve_batch_size_sum", model="syn") == 3


async def test_with_the_setting_off_an_idle_model_takes_what_is_queued_at_once(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    async with serving(_model(tmp_path / "repo", gate), idle_dispatch_busy_share=0) as served:
        answers = await _through_a_held_batch(served, gate)
        assert [(await answer).json()["outputs"][0]["data"] for answer in answers] == [[1.0], [2.0]]
        assert await served.metric("batchserve_batch_size_count", model="syn") == 2
