"""The batcher with a fake clock and a fake model: which rows went into which batch."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from batching import (
    BatchConfig,
    Batcher,
    BatcherClosed,
    BatchOutputError,
    DeadlineExceeded,
    FakeClock,
    InvalidRequest,
    LoopClock,
    QueueFull,
    RaggedOutput,
)

from .batching_helpers import FakeModel, ParkingModel, RecordingObserver, rows, settle, until


def make(config: BatchConfig, gated: bool = False):
    clock = FakeClock()
    model = FakeModel(gated=gated)
    observer = RecordingObserver()
    return Batcher(model, config, clock=clock, observer=observer), model, clock, observer


def spawn(batcher: Batcher, *values: float, **kwargs) -> asyncio.Task:
    return asyncio.ensure_future(batcher.submit(rows(*values), **kwargs))


async def test_full_batch_dispatches_without_waiting():
    batcher, model, _, observer = make(BatchConfig(max_batch_size=4, max_queue_delay=10))
    tasks = [spawn(batcher, float(i)) for i in range(4)]
    await settle()
    assert model.sizes == [4]
    for i, task in enumerate(tasks):
        np.testing.assert_array_equal(task.result()["y"], [[2.0 * i]])
    assert observer.formed == [(4, 0)]


async def test_partial_batch_waits_for_the_delay_of_the_oldest_request():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=8, max_queue_delay=0.010))
    first = spawn(batcher, 1.0)
    await settle()
    clock.advance(0.004)
    second = spawn(batcher, 2.0)
    await settle()
    clock.advance(0.005)
    await settle()
    assert model.sizes == []
    clock.advance(0.001)
    await settle()
    assert model.sizes == [2]
    assert first.done() and second.done()


async def test_dispatch_when_idle_sends_a_lone_request_at_once_and_batches_the_rest():
    config = BatchConfig(max_batch_size=8, max_queue_delay=10, dispatch_when_idle=True)
    batcher, model, clock, _ = make(config, gated=True)
    first = spawn(batcher, 1.0)
    await settle()
    assert model.sizes == [1]  # no waiting: the model was idle
    rest = [spawn(batcher, float(v)) for v in (2, 3, 4)]
    await settle()
    assert model.sizes == [1]  # the model is busy: these wait together
    model.gate.set()
    await settle()
    assert model.sizes == [1, 3]
    assert first.done() and all(t.done() for t in rest)


async def test_an_idle_model_waits_for_company_while_requests_keep_coming_to_a_saturated_cpu():
    """``busy``: while the loop's CPU is saturated and requests came while the last batch computed, an idle model
    is no reason to send what is queued at once: the batch fills for max_queue_delay (or until full). A request
    that found the model idle with nobody behind it (one client) leaves at once, as with CPU to spare."""
    saturated = [True]
    model, clock = FakeModel(gated=True), FakeClock()
    config = BatchConfig(max_batch_size=3, max_queue_delay=0.010, dispatch_when_idle=True)
    batcher = Batcher(model, config, clock=clock, busy=lambda: saturated[0])
    lone = spawn(batcher, 1.0)
    await settle()
    assert model.sizes == [1]  # nobody came while a batch computed: no company to wait for
    behind = spawn(batcher, 2.0)  # comes while that batch computes
    await settle()
    model.gate.set()
    await settle()
    assert lone.done() and not behind.done() and model.sizes == [1]  # idle model, saturated CPU: it waits
    clock.advance(0.004)
    spawn(batcher, 3.0)
    await settle()
    assert model.sizes == [1]
    clock.advance(0.006)  # the oldest has waited max_queue_delay
    await settle()
    assert model.sizes == [1, 2] and behind.done()
    saturated[0] = False
    model.gate.clear()
    spawn(batcher, 4.0)
    await settle()
    spawn(batcher, 5.0)  # behind a computing batch again, but the CPU is to spare now
    await settle()
    model.gate.set()
    await settle()
    assert model.sizes == [1, 2, 1, 1]  # the idle model takes it at once


async def test_a_submit_that_changes_no_decision_leaves_the_loop_asleep():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=8, max_queue_delay=0.010))
    spawn(batcher, 1.0)
    await settle()
    asleep = batcher.wakeups
    spawn(batcher, 2.0)  # 2 of 8 rows, same oldest arrival: the timer already covers it
    await settle()
    assert batcher.wakeups == asleep and model.sizes == []
    clock.advance(0.010)
    await settle()
    assert model.sizes == [2]


async def test_a_submit_that_makes_an_older_group_the_head_wakes_the_loop_early():
    config = BatchConfig(max_batch_size=8, max_queue_delay=1.0, priority_levels=2, priority_aging=100)
    batcher, model, clock, _ = make(config)
    narrow = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}))  # t=0, head, due 1.0
    await settle()
    clock.advance(0.5)
    wide = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 3), np.float32)}, priority=1))  # head, due 1.5
    await settle()
    clock.advance(0.5)
    await settle()  # the loop woke at 1.0 and now sleeps until 1.5
    assert model.sizes == []
    clock.advance(0.2)
    urgent = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}, priority=1, timeout=5))
    await settle()  # the narrow group leads again, and its oldest row was due at 1.0: no waiting until 1.5
    assert [b["x"].shape for b in model.batches] == [(2, 2)]
    assert narrow.done() and urgent.done() and not wide.done()
    clock.advance(0.3)
    await settle()
    assert wide.done()


async def test_never_more_batches_compute_than_max_inflight_batches():
    model = ParkingModel()
    config = BatchConfig(max_batch_size=4, max_queue_delay=0, max_inflight_batches=3, max_queue_size=10_000)
    batcher = Batcher(model, config, clock=FakeClock())
    rng = np.random.default_rng(3)

    async def submitter(i: int) -> None:
        for j in range(3):
            value = float(i * 10 + j)
            out = await batcher.submit(rows(value))
            assert out["y"].tolist() == [[2 * value]]

    submitters = [asyncio.ensure_future(submitter(i)) for i in range(200)]
    while not all(t.done() for t in submitters):
        # Quiet: every launched batch is parked in the model, and no slot is free while rows wait.
        await until(lambda: all(t.done() for t in submitters) or (
            len(model.parked) == batcher.inflight_batches and (len(model.parked) == 3 or batcher.queued_rows == 0)
            and model.parked != []
        ))
        assert model.active <= 3 and batcher.inflight_batches <= 3
        if model.parked:
            model.release(int(rng.integers(len(model.parked))))
    await asyncio.gather(*submitters)
    await batcher.close()
    assert model.peak == 3  # the slots were all used, and never one more
    assert model.calls >= 600 // 4


async def test_preferred_size_dispatches_at_once():
    batcher, model, _, _ = make(BatchConfig(max_batch_size=32, max_queue_delay=10, preferred_batch_sizes=(2,)))
    spawn(batcher, 1.0)
    spawn(batcher, 2.0)
    await settle()
    assert model.sizes == [2]


async def test_large_request_is_split_and_reassembled_in_order():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=4, max_queue_delay=0.001, max_inflight_batches=3))
    values = [float(v) for v in range(10)]
    task = spawn(batcher, *values)
    await settle()
    clock.advance(0.001)
    await settle()
    assert model.sizes == [4, 4, 2]
    np.testing.assert_array_equal(task.result()["y"][:, 0], np.array(values) * 2)


async def test_split_request_shares_a_batch_with_others():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=4, max_queue_delay=0.001, max_inflight_batches=4))
    big = spawn(batcher, 1, 2, 3, 4, 5, 6)
    small = spawn(batcher, 7, 8)
    await settle()
    assert model.sizes == [4, 4]
    np.testing.assert_array_equal(model.batches[1]["x"][:, 0], [5, 6, 7, 8])
    np.testing.assert_array_equal(big.result()["y"][:, 0], [2, 4, 6, 8, 10, 12])
    np.testing.assert_array_equal(small.result()["y"][:, 0], [14, 16])
    clock.advance(1)


async def test_batch_is_padded_to_an_allowed_size_and_padding_dropped():
    config = BatchConfig(max_batch_size=8, max_queue_delay=0.001, allowed_batch_sizes=(2, 4, 8))
    batcher, model, clock, observer = make(config)
    tasks = [spawn(batcher, float(v)) for v in (1, 2, 3)]
    await settle()
    clock.advance(0.001)
    await settle()
    assert model.sizes == [4]
    assert observer.formed == [(3, 1)]
    assert [t.result()["y"].shape for t in tasks] == [(1, 1)] * 3


async def test_ragged_inputs_are_padded_and_ragged_outputs_cut_back():
    async def echo(inputs):
        return {"per_token": inputs["tokens"] + 100, "pooled": inputs["tokens"].sum(axis=1)}

    config = BatchConfig(
        max_batch_size=2, max_queue_delay=1, pad_inputs={"tokens": -1},
        ragged_outputs={"per_token": RaggedOutput("tokens", input_axis=1, output_axis=1)},
    )
    seen = []

    async def model(inputs):
        seen.append(inputs["tokens"].copy())
        return await echo(inputs)

    batcher = Batcher(model, config, clock=FakeClock())
    short = asyncio.ensure_future(batcher.submit({"tokens": np.array([[1, 2, 3]])}))
    long = asyncio.ensure_future(batcher.submit({"tokens": np.array([[1, 2, 3, 4, 5]])}))
    await settle()
    assert seen[0].tolist() == [[1, 2, 3, -1, -1], [1, 2, 3, 4, 5]]
    assert short.result()["per_token"].tolist() == [[101, 102, 103]]
    assert long.result()["per_token"].tolist() == [[101, 102, 103, 104, 105]]
    assert short.result()["pooled"].tolist() == [4]


async def test_different_shapes_without_padding_go_to_separate_batches():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=8, max_queue_delay=0.001, max_inflight_batches=2))
    a = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}))
    b = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 3), np.float32)}))
    c = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}))
    await settle()
    clock.advance(0.001)
    await settle()
    assert sorted(tuple(batch["x"].shape) for batch in model.batches) == [(1, 3), (2, 2)]
    assert a.result()["y"].shape == (1, 2) and b.result()["y"].shape == (1, 3) and c.done()


async def test_deadline_expires_in_queue_without_reaching_the_model():
    batcher, model, clock, observer = make(BatchConfig(max_batch_size=1, max_queue_delay=0), gated=True)
    running = spawn(batcher, 1.0)
    await settle()
    late = spawn(batcher, 2.0, timeout=0.050)
    await settle()
    clock.advance(0.050)
    await settle()
    with pytest.raises(DeadlineExceeded):
        late.result()
    model.gate.set()
    await settle()
    assert running.result()["y"].tolist() == [[2.0]]
    assert [b["x"].tolist() for b in model.batches] == [[[1.0]]]
    assert ("deadline", 1) in observer.rejections
    assert batcher.queued_rows == 0


async def test_one_timer_serves_every_deadline_and_each_expires_on_time():
    batcher, model, clock, observer = make(BatchConfig(max_batch_size=1, max_queue_delay=0), gated=True)
    spawn(batcher, 0.0)
    await settle()
    late = [spawn(batcher, float(i), timeout=1.0 + i) for i in range(1, 6)]
    await settle()
    assert clock.pending_timers == 1
    clock.advance(2.5)  # the deadlines at 2 s (and only those) have passed
    await settle()
    assert [t.done() for t in late] == [True, False, False, False, False]
    clock.advance(10)
    await settle()
    assert all(isinstance(t.exception(), DeadlineExceeded) for t in late)
    assert clock.pending_timers == 0 and batcher.queued_rows == 0
    assert [b["x"][0, 0] for b in model.batches] == [0.0]


async def test_past_deadline_is_rejected_at_submit():
    batcher, model, clock, _ = make(BatchConfig())
    clock.advance(5)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows(1.0), deadline=4.0)
    assert model.batches == []


async def test_cancelled_caller_leaves_the_queue():
    batcher, model, clock, observer = make(BatchConfig(max_batch_size=4, max_queue_delay=0.010))
    leaving = spawn(batcher, 1.0, 2.0)
    staying = spawn(batcher, 3.0)
    await settle()
    leaving.cancel()
    await settle()
    assert batcher.queued_rows == 1
    clock.advance(0.010)
    await settle()
    assert [b["x"][:, 0].tolist() for b in model.batches] == [[3.0]]
    assert staying.result()["y"].tolist() == [[6.0]]
    assert ("cancelled", 2) in observer.rejections


async def test_failing_batch_fails_only_its_requests_and_batcher_keeps_serving():
    batcher, model, clock, observer = make(BatchConfig(max_batch_size=2, max_queue_delay=0.001))
    model.fail_when = 13.0
    bad = [spawn(batcher, 13.0), spawn(batcher, 1.0)]
    await settle()
    good = [spawn(batcher, 2.0), spawn(batcher, 3.0)]
    await settle()
    for task in bad:
        with pytest.raises(RuntimeError, match="model failed"):
            task.result()
    assert [t.result()["y"][0, 0] for t in good] == [4.0, 6.0]
    assert observer.computed == [(2, False), (2, True)]


async def test_wrong_output_row_count_is_an_error_for_that_batch_only():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=2, max_queue_delay=0.001))
    model.wrong_rows = True
    bad = [spawn(batcher, 1.0), spawn(batcher, 2.0)]
    await settle()
    model.wrong_rows = False
    good = spawn(batcher, 3.0)
    await settle()
    clock.advance(0.001)
    await settle()
    for task in bad:
        with pytest.raises(BatchOutputError, match="output 'y' has 1 rows, the batch had 2"):
            task.result()
    assert good.result()["y"].tolist() == [[6.0]]


async def test_queue_full_rejects_at_once():
    batcher, model, _, observer = make(BatchConfig(max_batch_size=1, max_queue_size=3, max_queue_delay=0), gated=True)
    spawn(batcher, 0.0)
    await settle()  # dispatched: the model holds it
    queued = [spawn(batcher, 1.0, 2.0), spawn(batcher, 3.0)]
    await settle()
    with pytest.raises(QueueFull, match="max_queue_size=3"):
        await batcher.submit(rows(4.0))
    assert observer.rejections == [("queue_full", 1)]
    model.gate.set()
    await settle()
    assert all(t.done() and not t.exception() for t in queued)


async def test_close_drains_every_accepted_request():
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=2, max_queue_delay=10), gated=True)
    tasks = [spawn(batcher, float(v)) for v in range(5)]
    await settle()
    closing = asyncio.ensure_future(batcher.close())
    await settle()
    with pytest.raises(BatcherClosed):
        await batcher.submit(rows(9.0))
    model.gate.set()
    await settle()
    assert closing.done()
    assert [t.result()["y"][0, 0] for t in tasks] == [0, 2, 4, 6, 8]


async def test_close_without_drain_fails_queued_and_finishes_running():
    batcher, model, clock, observer = make(BatchConfig(max_batch_size=1, max_queue_delay=0), gated=True)
    running = spawn(batcher, 1.0)
    await settle()
    queued = spawn(batcher, 2.0)
    await settle()
    closing = asyncio.ensure_future(batcher.close(drain=False))
    await settle()
    with pytest.raises(BatcherClosed):
        queued.result()
    model.gate.set()
    await settle()
    assert closing.done() and running.result()["y"].tolist() == [[2.0]]
    assert ("closed", 1) in observer.rejections


async def test_higher_priority_then_earliest_deadline_first():
    config = BatchConfig(max_batch_size=1, max_queue_delay=0, priority_levels=3, priority_aging=100)
    batcher, model, clock, _ = make(config, gated=True)
    spawn(batcher, 0.0)
    await settle()
    spawn(batcher, 1.0, priority=0)
    spawn(batcher, 2.0, priority=1)
    spawn(batcher, 3.0, priority=1, timeout=50)
    spawn(batcher, 4.0, priority=2)
    spawn(batcher, 5.0, priority=1, timeout=20)
    await settle()
    model.gate.set()
    await settle()
    assert [b["x"][0, 0] for b in model.batches] == [0, 4, 5, 3, 2, 1]


async def test_aging_lifts_a_waiting_low_priority_request():
    config = BatchConfig(max_batch_size=1, max_queue_delay=0, priority_levels=2, priority_aging=0.5)
    batcher, model, clock, _ = make(config, gated=True)
    spawn(batcher, 0.0)
    await settle()
    spawn(batcher, 1.0, priority=0)
    await settle()
    clock.advance(0.6)
    spawn(batcher, 2.0, priority=1)
    await settle()
    model.gate.set()
    await settle()
    assert [b["x"][0, 0] for b in model.batches] == [0, 1, 2]


async def test_invalid_requests_are_rejected_before_queueing():
    batcher, model, _, _ = make(BatchConfig(priority_levels=2))
    with pytest.raises(InvalidRequest, match="disagree"):
        await batcher.submit({"x": np.ones((2, 1)), "z": np.ones((3, 1))})
    with pytest.raises(InvalidRequest, match="zero rows"):
        await batcher.submit({"x": np.ones((0, 1))})
    with pytest.raises(InvalidRequest, match="priority"):
        await batcher.submit(rows(1.0), priority=5)
    assert batcher.queued_rows == 0


async def test_idle_batcher_does_not_wake_up():
    batcher = Batcher(FakeModel(), BatchConfig(max_batch_size=4, max_queue_delay=0.001), clock=LoopClock())
    await batcher.submit(rows(1.0))
    await asyncio.sleep(0.01)
    before = batcher.wakeups
    await asyncio.sleep(0.2)
    assert batcher.wakeups == before
    await batcher.close()


async def test_many_concurrent_submitters_each_get_their_own_rows():
    rng = np.random.default_rng(7)

    async def model(inputs):
        for _ in range(int(rng.integers(0, 4))):
            await asyncio.sleep(0)
        return {"y": inputs["x"] * 2, "id": inputs["id"]}

    config = BatchConfig(max_batch_size=16, max_queue_delay=0.0005, max_inflight_batches=3,
                         preferred_batch_sizes=(8,), max_queue_size=100_000)
    batcher = Batcher(model, config)
    sizes = rng.integers(1, 40, size=300)

    async def one(i: int, n: int):
        x = rng.standard_normal((n, 3)).astype(np.float32)
        out = await batcher.submit({"x": x, "id": np.full((n,), i)})
        np.testing.assert_array_equal(out["y"], x * 2)
        assert (out["id"] == i).all()

    await asyncio.gather(*(one(i, int(n)) for i, n in enumerate(sizes)))
    await batcher.close()
    assert batcher.queued_rows == 0
