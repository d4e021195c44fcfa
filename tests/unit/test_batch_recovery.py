"""Lost batches (the worker died or hung): run again, then bisected to the poison rows, which are quarantined."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import numpy as np
import pytest

from batching import BatchConfig, Batcher, ComputeLost, DeadlineExceeded, FakeClock, PoisonInput, QueueFull
from batching.quarantine import Quarantine, row_digest
from batching.recovery import halves as _halves

from .batching_helpers import RecordingObserver, rows, settle, unexpected


class CrashingModel:
    """Doubles ``x``. A batch holding ``poison`` always loses its worker; the next ``transient`` batches
    lose theirs whatever they hold. ``seconds`` of fake time pass in every run."""

    def __init__(self, clock: FakeClock, poison: float | None = None, transient: int = 0, seconds: float = 0.0):
        self.clock = clock
        self.poison = poison
        self.transient = transient
        self.seconds = seconds
        self.batches: list[list[float]] = []

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append(x.reshape(-1).tolist())
        self.clock.advance(self.seconds)
        if self.transient:
            self.transient -= 1
            raise ComputeLost("worker died (exit code -9)")
        if self.poison is not None and np.any(x == self.poison):
            raise ComputeLost("worker died (exit code 70)")
        return {"y": x * 2}


def make(config: BatchConfig, **model_args):
    clock = FakeClock()
    model = CrashingModel(clock, **model_args)
    observer = RecordingObserver()
    return Batcher(model, config, clock=clock, observer=observer, name="m:1"), model, clock, observer


def submit_all(batcher: Batcher, values: list[float], **kwargs) -> list[asyncio.Task]:
    return [asyncio.ensure_future(batcher.submit(rows(v), **kwargs)) for v in values]


async def test_a_batch_that_loses_its_worker_once_is_run_again_and_nobody_sees_it():
    batcher, model, _, observer = make(BatchConfig(max_batch_size=4, max_queue_delay=10), transient=1)
    tasks = submit_all(batcher, [1.0, 2.0, 3.0, 4.0])
    await settle()
    assert [t.result()["y"].tolist() for t in tasks] == [[[2.0]], [[4.0]], [[6.0]], [[8.0]]]
    assert model.batches == [[1.0, 2.0, 3.0, 4.0]] * 2
    assert observer.lost == [(4, 1)]
    assert observer.computed == [(4, True)]


async def test_a_poison_row_is_bisected_out_and_only_its_request_fails():
    batcher, model, _, observer = make(BatchConfig(max_batch_size=8, max_queue_delay=10), poison=6.0)
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    tasks = submit_all(batcher, values)
    await settle()
    for value, task in zip(values, tasks):
        if value == 6.0:
            with pytest.raises(PoisonInput, match="crashed the model m:1"):
                task.result()
        else:
            assert task.result()["y"].tolist() == [[value * 2]]
    # first run, retry, then halves: [1-4] ok, [5-8] lost, [5,6] lost, [7,8] ok, [5] ok, [6] lost
    assert model.batches == [values, values, values[:4], values[4:], [5.0, 6.0], [5.0], [6.0], [7.0, 8.0]]
    assert observer.lost == [(8, 1), (8, 2), (4, 3), (2, 4), (1, 5)]
    assert observer.rejections == [("poison", 1)]
    assert observer.computed == [(8, False)]


async def test_a_quarantined_input_is_refused_at_once_until_the_quarantine_ends():
    config = BatchConfig(max_batch_size=2, max_queue_delay=10, poison_quarantine=60.0, dispatch_when_idle=True)
    batcher, model, clock, observer = make(config, poison=6.0)
    (task,) = submit_all(batcher, [6.0])
    await settle()
    with pytest.raises(PoisonInput):
        task.result()
    calls = len(model.batches)
    with pytest.raises(PoisonInput, match="quarantined for up to 60 s"):
        await batcher.submit({"x": np.array([[1.0], [6.0]], dtype=np.float32)})  # in any request, at any row
    assert len(model.batches) == calls  # refused, never run
    assert observer.rejections == [("poison", 1), ("poison", 2)]
    assert (await batcher.submit(rows(6.5)))["y"].tolist() == [[13.0]]  # other inputs still run
    clock.advance(60.0)
    (again,) = submit_all(batcher, [6.0])  # released: it is tried (and found) once more
    await settle()
    with pytest.raises(PoisonInput, match="crashed the model"):
        again.result()


async def test_a_request_whose_deadline_passes_during_recovery_gets_504_and_is_not_rerun():
    batcher, model, _, observer = make(BatchConfig(max_batch_size=2, max_queue_delay=10), transient=1, seconds=1.0)
    short, long = (asyncio.ensure_future(batcher.submit(rows(v), timeout=t)) for v, t in ((1.0, 0.5), (2.0, 5.0)))
    await settle()
    with pytest.raises(DeadlineExceeded, match="run again"):
        short.result()
    assert long.result()["y"].tolist() == [[4.0]]
    assert model.batches == [[1.0, 2.0], [2.0]]
    assert ("deadline", 1) in observer.rejections


async def test_without_retries_a_lost_batch_fails_its_requests_with_the_workers_error():
    config = BatchConfig(max_batch_size=2, max_queue_delay=10, retry_lost_batches=0)
    batcher, model, _, _ = make(config, transient=1)
    tasks = submit_all(batcher, [1.0, 2.0])
    await settle()
    for task in tasks:
        with pytest.raises(ComputeLost, match="exit code -9"):
            task.result()
    assert model.batches == [[1.0, 2.0]]


async def test_a_multi_row_request_holding_the_poison_row_fails_whole_and_its_neighbours_are_answered():
    batcher, model, _, _ = make(BatchConfig(max_batch_size=4, max_queue_delay=10), poison=3.0)
    big = asyncio.ensure_future(batcher.submit({"x": np.array([[2.0], [3.0], [4.0]], dtype=np.float32)}))
    small = asyncio.ensure_future(batcher.submit(rows(5.0)))
    await settle()
    with pytest.raises(PoisonInput):
        big.result()
    assert small.result()["y"].tolist() == [[10.0]]


async def test_queue_full_says_when_to_retry_from_the_measured_drain_rate():
    config = BatchConfig(max_batch_size=2, max_queue_delay=0, max_queue_size=4)
    batcher, model, _, _ = make(config, seconds=0.5)  # 0.25 s a row
    assert batcher.drain_seconds() == 0.0
    await asyncio.gather(*submit_all(batcher, [1.0, 2.0]))
    model.seconds = 0.0
    gate = asyncio.Event()
    original = model.__call__

    async def held(inputs):
        await gate.wait()
        return await original(inputs)

    batcher._run_batch = held  # hold the next batch so rows queue behind it
    submit_all(batcher, [1.0])
    await settle()
    queued = submit_all(batcher, [1.0, 2.0, 3.0, 4.0])
    await settle()
    with pytest.raises(QueueFull) as refused:
        await batcher.submit(rows(9.0))
    assert refused.value.retry_after == pytest.approx(4 * 0.25)
    gate.set()
    await asyncio.gather(*queued)


@pytest.mark.parametrize(("sizes", "first", "second"), [
    ([1, 1], [1], [1]),
    ([4], [2], [2]),
    ([3], [1], [2]),
    ([1, 2, 1], [1, 1], [1, 1]),
    ([2, 1, 1, 4], [2, 1, 1], [4]),
    ([5, 1], [3], [2, 1]),
])
def test_halves_split_rows_evenly_cutting_at_most_one_request(sizes, first, second):
    segments = [(object(), 0, n) for n in sizes]
    a, b = _halves(segments)  # type: ignore[arg-type]
    assert [n for _, _, n in a] == first and [n for _, _, n in b] == second
    cut = {id(r) for r, _, _ in a} & {id(r) for r, _, _ in b}
    assert len(cut) <= 1


def test_row_digests_tell_rows_apart_by_value_dtype_shape_and_name():
    x = {"x": np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0]], dtype=np.float32)}
    assert row_digest(x, 0) == row_digest(x, 1) != row_digest(x, 2)
    assert row_digest(x, 0) != row_digest({"x": x["x"].astype(np.float64)}, 0)
    assert row_digest(x, 0) != row_digest({"z": x["x"]}, 0)
    text = {"s": np.array([b"a", b"b"], dtype=object)}
    assert row_digest(text, 0) != row_digest(text, 1)
    quarantine = Quarantine()
    quarantine.add(row_digest(x, 2), until=10.0)
    assert quarantine.holds(x, 3, now=9.0) and not quarantine.holds(x, 2, now=9.0)
    assert not quarantine.holds(x, 3, now=10.0) and len(quarantine) == 0


async def test_a_group_holding_a_quarantined_row_is_refused_but_counted_only_per_client_request():
    config = BatchConfig(max_batch_size=4, max_queue_delay=10, dispatch_when_idle=True)
    batcher, _, _, observer = make(config, poison=6.0)
    (task,) = submit_all(batcher, [6.0])
    await settle()
    with pytest.raises(PoisonInput):
        task.result()
    group = {"x": np.array([[1.0], [6.0], [2.0]], dtype=np.float32)}
    with pytest.raises(PoisonInput):
        # the front end then sends its three requests one by one
        batcher.enqueue(group, members=3, delivered=unexpected)
    with pytest.raises(PoisonInput):
        batcher.enqueue(rows(6.0), delivered=unexpected)
    assert observer.rejections == [("poison", 1), ("poison", 3), ("poison", 1)]
    assert observer.rejected_requests == [1, 0, 1]
