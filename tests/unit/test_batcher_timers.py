"""The batch loop's timers: a lone request at an idle model arms none, and a timer that fires before its
moment (as uvloop's millisecond timers can) neither wakes the loop early nor spins it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import uvloop

from batching import BatchConfig, Batcher, FakeClock, LoopClock
from batching.clock import TimerHandle

from .batching_helpers import FakeModel, rows, settle, until


class CountingClock(FakeClock):
    """A FakeClock that counts the timers armed on it."""

    def __init__(self, early: float = 0.0) -> None:
        super().__init__(early=early)
        self.armed = 0

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        self.armed += 1
        return super().call_at(when, callback)


async def test_an_arrival_at_an_idle_model_is_dispatched_without_a_timer():
    clock = CountingClock()
    model = FakeModel()
    config = BatchConfig(max_batch_size=8, max_queue_delay=0.002, dispatch_when_idle=True, default_timeout=None)
    batcher = Batcher(model, config, clock=clock)
    for value in (1.0, 2.0, 3.0):  # one client: each request arrives once the last one is answered
        answer = asyncio.ensure_future(batcher.submit(rows(value)))
        await settle()
        assert answer.done() and answer.result()["y"].tolist() == [[2 * value]]
    assert model.sizes == [1, 1, 1]
    assert clock.armed == 0 and clock.pending_timers == 0  # no time passed: nothing waited on a timer
    await batcher.close()


async def test_a_wait_timer_that_fires_early_lets_the_loop_sleep_until_its_moment():
    clock = FakeClock(early=0.001)  # timers fire a millisecond before their moment
    model = FakeModel()
    batcher = Batcher(model, BatchConfig(max_batch_size=8, max_queue_delay=0.010), clock=clock)
    answer = asyncio.ensure_future(batcher.submit(rows(1.0)))
    await settle()
    asleep = batcher.wakeups
    clock.advance(0.0095)  # the timer fired at 9 ms, a millisecond early, and was armed again for 10 ms
    await settle()
    assert (batcher.wakeups, model.sizes, clock.pending_timers) == (asleep, [], 1)
    clock.advance(0.0005)
    await settle()
    assert model.sizes == [1] and answer.done()  # at the moment
    await batcher.close()


async def test_an_early_timer_does_not_hold_back_an_earlier_wake_by_a_submit():
    clock = FakeClock(early=0.001)
    model = FakeModel()
    batcher = Batcher(model, BatchConfig(max_batch_size=2, max_queue_delay=0.010), clock=clock)
    first = asyncio.ensure_future(batcher.submit(rows(1.0)))
    await settle()
    clock.advance(0.0095)  # fired early, armed again
    second = asyncio.ensure_future(batcher.submit(rows(2.0)))  # a full batch: dispatched now
    await settle()
    assert model.sizes == [2] and first.done() and second.done()
    assert clock.pending_timers == 0  # the re-armed timer went with the wait
    await batcher.close()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_wait_on_a_real_loop_ends_at_its_moment_without_spinning(loop_factory):
    async def scenario() -> tuple[float, int]:
        model = FakeModel(gated=True)
        config = BatchConfig(max_batch_size=8, max_queue_delay=0.0003, max_inflight_batches=2,
                             dispatch_when_idle=True)
        batcher = Batcher(model, config, clock=LoopClock())
        busy = asyncio.ensure_future(batcher.submit(rows(1.0)))  # the model is busy with this one
        await until(lambda: model.sizes == [1])
        waits = batcher.wakeups
        sent = batcher.clock.now()
        waiting = asyncio.ensure_future(batcher.submit(rows(2.0)))  # waits 0.3 ms for company, a slot free
        await until(lambda: len(model.sizes) == 2, rounds=10**6)
        waited, wakeups = batcher.clock.now() - sent, batcher.wakeups - waits
        model.gate.set()
        await asyncio.gather(busy, waiting)
        await batcher.close()
        return waited, wakeups

    loop = loop_factory()
    try:
        waited, wakeups = loop.run_until_complete(scenario())
    finally:
        loop.close()
    assert waited >= 0.0003
    assert wakeups <= 2  # woken by the submit (a sooner moment), then at the moment: an early fire, re-armed, is none
