"""Priority aging: off by default (Triton has none), so priorities hold under load; per model when set."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from batching import BatchConfig, Batcher, FakeClock, InvalidBatchConfig

from .batching_helpers import FakeModel, RecordingObserver, rows, settle


def make(config: BatchConfig, costs: dict[int, float] | None = None):
    clock = FakeClock()
    model = FakeModel(gated=True)
    batcher = Batcher(model, config, clock=clock, observer=RecordingObserver())
    if costs:
        batcher.seed_costs(costs)
    return batcher, model, clock


def spawn(batcher: Batcher, value: float, **kwargs) -> asyncio.Task:
    return asyncio.ensure_future(batcher.submit(rows(value), **kwargs))


def order(model: FakeModel) -> list[float]:
    return [float(v) for b in model.batches for v in b["x"][:, 0]]


def test_aging_is_off_by_default_and_zero_means_off():
    assert BatchConfig().priority_aging is None
    assert BatchConfig(priority_aging=0).priority_aging is None
    assert BatchConfig(priority_aging=0.25).priority_aging == 0.25


@pytest.mark.parametrize("aging", [-0.1, math.inf, math.nan])
def test_a_bad_aging_is_refused_by_name(aging):
    with pytest.raises(InvalidBatchConfig, match=r"BatchConfig\.priority_aging"):
        BatchConfig(priority_aging=aging)


async def test_without_aging_a_higher_priority_goes_first_however_long_the_others_waited():
    batcher, model, clock = make(BatchConfig(max_batch_size=1, max_queue_delay=0, priority_levels=3))
    spawn(batcher, 0.0)  # computing, held at the gate
    await settle()
    for value in (1.0, 2.0, 3.0):
        spawn(batcher, value, priority=0)
    spawn(batcher, 4.0, priority=1)
    await settle()
    clock.advance(3600.0)  # an hour in the queue lifts nobody
    spawn(batcher, 5.0, priority=2)
    spawn(batcher, 6.0, priority=1)
    await settle()
    model.gate.set()
    await settle()
    assert order(model) == [0.0, 5.0, 4.0, 6.0, 1.0, 2.0, 3.0]


async def test_with_aging_each_period_waited_lifts_a_request_one_level_up_to_the_top():
    config = BatchConfig(max_batch_size=1, max_queue_delay=0, priority_levels=3, priority_aging=0.5)
    batcher, model, clock = make(config)
    spawn(batcher, 0.0)
    await settle()
    spawn(batcher, 1.0, priority=0)
    await settle()
    clock.advance(0.6)  # 1.0 now competes at level 1: ahead of a newer level 1, behind a level 2
    spawn(batcher, 2.0, priority=1)
    spawn(batcher, 3.0, priority=2)
    await settle()
    clock.advance(0.3)  # 0.9 s: still level 1; 2.0 has waited 0.3 s, no lift yet
    spawn(batcher, 4.0, priority=1)
    await settle()
    model.gate.set()
    await settle()
    assert order(model) == [0.0, 3.0, 1.0, 2.0, 4.0]


async def test_with_aging_a_request_that_waited_long_enough_competes_with_the_top_level_by_arrival():
    config = BatchConfig(max_batch_size=1, max_queue_delay=0, priority_levels=3, priority_aging=0.5)
    batcher, model, clock = make(config)
    spawn(batcher, 0.0)
    await settle()
    spawn(batcher, 1.0, priority=0)
    await settle()
    clock.advance(1.0)  # two periods: level 0 + 2 = the top
    spawn(batcher, 2.0, priority=2)
    await settle()
    model.gate.set()
    await settle()
    assert order(model) == [0.0, 1.0, 2.0]


async def test_slo_admission_counts_no_older_lower_priority_rows_ahead_without_aging():
    """Old rows of a lower priority are never ahead without aging, so a top-priority request is admitted
    however many of them wait, and however long."""
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=1.0, dispatch_when_idle=True, priority_levels=3)
    batcher, model, clock = make(config, {1: 0.250, 4: 0.250})
    spawn(batcher, 0.0)  # computing until 0.25 (planned)
    await settle()
    low = [spawn(batcher, float(i)) for i in range(1, 13)]  # three batches of 0.25 s: all end by 1.0
    await settle()
    assert not any(t.done() for t in low)
    clock.advance(0.2)
    high = spawn(batcher, 99.0, priority=2)  # behind those twelve it would end at 1.25, after its 1.2
    await settle()
    assert not high.done()
    model.gate.set()
    await settle()
    assert order(model)[:2] == [0.0, 99.0]
    assert high.result()["y"][0, 0] == 198.0


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "model.yaml").write_text(text)
    return tmp_path


def test_model_yaml_sets_aging_per_model_in_milliseconds(tmp_path):
    from server.models.config import load_model_config
    from server.settings import Settings

    def aging(text: str) -> float | None:
        return load_model_config(write(tmp_path, text)).batch_config(Settings(), 1).priority_aging

    assert aging("max_batch_size: 8\n") is None
    assert aging("priority_aging_ms: 0\n") is None
    assert aging("priority_aging_ms: 250\n") == pytest.approx(0.250)


@pytest.mark.parametrize(("text", "named"), [
    ("priority_aging_ms: -5\n", "priority_aging_ms"),
    ("priority_aging_ms: .inf\n", "priority_aging_ms"),
    ("priority_aging_ms: soon\n", "priority_aging_ms"),
    ("priority_aging: 0.1\n", "unknown key 'priority_aging'"),
])
def test_a_bad_or_unknown_aging_key_fails_the_load_by_name(tmp_path, text, named):
    from server.models.config import ModelConfigError, load_model_config

    with pytest.raises(ModelConfigError, match=named):
        load_model_config(write(tmp_path, text))
