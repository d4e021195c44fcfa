"""``Batcher.enqueue(..., delivered=)``: a request settled by a callback as its batch is split, with no future.

What its callers (the in-protocol HTTP path, the engine) rely on: one call per request, with its own rows,
or with the error that ended it; none after ``cancel``; the batch's books (compute time, the traced
members' numbers, the freed slot) kept before the first call, so what a callback does is never counted as
the model's time; a callback that raises costs no other request its answer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from collections.abc import Callable, Mapping

import numpy as np
import pytest

from batching import BatchConfig, Batcher, DeadlineExceeded, FakeClock

from .batching_helpers import FakeModel, RecordingObserver, rows, settle

Settled = tuple[str, object, BaseException | None]


class Recorder:
    """Every delivery, in order: (name, outputs, error)."""

    def __init__(self) -> None:
        self.calls: list[Settled] = []

    def __call__(self, name: str) -> Callable[[object, BaseException | None], None]:
        def delivered(outputs: object, error: BaseException | None) -> None:
            self.calls.append((name, outputs, error))
        return delivered


class TimingObserver(RecordingObserver):
    """Also the seconds of each batch, and when its traced members were told (in ``events``, shared)."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self.events = events

    def batch_computed(self, seconds: float, rows: int, ok: bool) -> None:
        super().batch_computed(seconds, rows, ok)
        self.seconds.append(seconds)

    def batch_traced(self, members: list[tuple[object, float | None]], rows: int) -> Callable[[bool], None]:
        return lambda ok: self.events.append(f"traced told ok={ok}")


def make(config: BatchConfig, events: list[str] | None = None) -> tuple[Batcher, FakeModel, FakeClock, TimingObserver]:
    clock, model, observer = FakeClock(), FakeModel(gated=True), TimingObserver(events if events is not None else [])
    return Batcher(model, config, clock=clock, observer=observer), model, clock, observer


async def test_each_request_is_delivered_once_with_its_own_rows() -> None:
    batcher, model, _, _ = make(BatchConfig(max_batch_size=8, max_queue_delay=0, dispatch_when_idle=True))
    recorder = Recorder()
    batcher.enqueue(rows(1.0), delivered=recorder("one"))
    batcher.enqueue(rows(2.0, 3.0), delivered=recorder("two"))
    await settle()
    assert recorder.calls == []  # queued and computing: nothing delivered yet
    model.gate.set()
    await settle()
    assert [(name, error) for name, _, error in recorder.calls] == [("one", None), ("two", None)]
    np.testing.assert_array_equal(recorder.calls[0][1]["y"], [[2.0]])  # type: ignore[index]
    np.testing.assert_array_equal(recorder.calls[1][1]["y"], [[4.0], [6.0]])  # type: ignore[index]


async def test_a_request_split_over_batches_is_delivered_once_with_every_row_in_order() -> None:
    batcher, model, _, _ = make(BatchConfig(max_batch_size=2, max_queue_delay=0, dispatch_when_idle=True))
    model.gate.set()
    recorder = Recorder()
    batcher.enqueue(rows(1.0, 2.0, 3.0, 4.0, 5.0), delivered=recorder("five rows"))
    await settle()
    assert model.sizes == [2, 2, 1]
    [(name, outputs, error)] = recorder.calls
    assert error is None
    np.testing.assert_array_equal(outputs["y"], [[2.0], [4.0], [6.0], [8.0], [10.0]])  # type: ignore[index]


async def test_a_failed_batch_and_a_passed_deadline_are_delivered_as_errors() -> None:
    batcher, model, clock, _ = make(BatchConfig(max_batch_size=1, max_queue_delay=0, dispatch_when_idle=True,
                                                max_inflight_batches=1))
    model.fail_when = 7.0
    recorder = Recorder()
    batcher.enqueue(rows(7.0), delivered=recorder("fails"))
    await settle()  # computing, held at the gate
    batcher.enqueue(rows(1.0), timeout=0.5, delivered=recorder("expires"))  # queued behind it
    await settle()
    clock.advance(0.5)
    assert [(name, type(error)) for name, _, error in recorder.calls] == [("expires", DeadlineExceeded)]
    model.gate.set()
    await settle()
    assert [(name, outputs, str(error)) for name, outputs, error in recorder.calls[1:]] == [
        ("fails", None, "model failed on this batch")]


async def test_a_cancelled_request_is_never_delivered_and_leaves_the_queue() -> None:
    batcher, model, _, observer = make(BatchConfig(max_batch_size=1, max_queue_delay=0, dispatch_when_idle=True,
                                                   max_inflight_batches=1))
    recorder = Recorder()
    computing = batcher.enqueue(rows(1.0), delivered=recorder("computing"))
    await settle()
    queued = batcher.enqueue(rows(2.0), delivered=recorder("queued"))
    await settle()
    batcher.cancel(queued)
    batcher.cancel(computing)  # its rows compute on; its answer is dropped
    assert batcher.queued_rows == 0 and observer.rejections == [("cancelled", 1)]
    model.gate.set()
    await settle()
    assert recorder.calls == [] and model.sizes == [1]


async def test_the_batchs_books_are_kept_before_its_first_delivery() -> None:
    """A callback that takes time (it encodes and writes an answer) is not the model's time, and a traced
    member's numbers are complete when its answer is made."""
    events: list[str] = []
    batcher, model, clock, observer = make(
        BatchConfig(max_batch_size=4, max_queue_delay=0, dispatch_when_idle=True), events)

    def slow_answer(outputs: object, error: BaseException | None) -> None:
        events.append(f"delivered with {batcher.inflight_batches} batches in flight")
        clock.advance(1.0)

    batcher.enqueue(rows(1.0), trace="traced", delivered=slow_answer)
    await settle()
    clock.advance(0.25)  # the model's time
    model.gate.set()
    await settle()
    assert events == ["traced told ok=True", "delivered with 0 batches in flight"]
    assert observer.seconds == [0.25]


async def test_a_callback_that_raises_costs_no_other_request_its_answer(caplog: pytest.LogCaptureFixture) -> None:
    batcher, model, _, _ = make(BatchConfig(max_batch_size=4, max_queue_delay=0))
    model.gate.set()
    recorder = Recorder()

    def broken(outputs: object, error: BaseException | None) -> None:
        raise RuntimeError("the answer could not be written")

    batcher.enqueue(rows(1.0), delivered=broken)
    batcher.enqueue(rows(2.0), delivered=recorder("after it"))
    with caplog.at_level(logging.ERROR, logger="batching.batcher"):
        await batcher.close(drain=True)
    assert [(name, error) for name, _, error in recorder.calls] == [("after it", None)]
    assert "a request's delivery callback failed" in caplog.text
    assert "the answer could not be written" in caplog.text


async def test_a_settled_request_leaves_no_reference_cycle_through_its_callback() -> None:
    """Callers keep the ticket and their callback refers to them: once settled (or cancelled) the callback
    is dropped, so both go with their last reference, not with a collection of the garbage collector."""
    batcher, model, _, _ = make(BatchConfig(max_batch_size=4, max_queue_delay=0, dispatch_when_idle=True))
    model.gate.set()

    class Owner:
        ticket: object = None

        def __call__(self, outputs: object, error: BaseException | None) -> None:
            pass

    gc.disable()
    try:
        owners = [Owner(), Owner()]
        gone = [weakref.ref(owner) for owner in owners]
        for owner in owners:
            owner.ticket = batcher.enqueue(rows(1.0), delivered=owner)
        batcher.cancel(owners[1].ticket)  # type: ignore[arg-type]
        await settle()
        del owner, owners
        assert [ref() for ref in gone] == [None, None]
    finally:
        gc.enable()


async def test_with_requests_waiting_the_next_batch_reaches_the_model_before_a_finished_one_is_answered() -> None:
    """The model (a GPU) runs the next batch while the front end writes the last one's answers."""
    events: list[str] = []
    gates = [asyncio.Event(), asyncio.Event()]  # each batch held until its own is set

    async def model(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        events.append(f"model runs {inputs['x'][:, 0].tolist()}")
        await gates[len([e for e in events if e.startswith("model")]) - 1].wait()
        return {"y": inputs["x"] * 2}

    def answer(name: str) -> Callable[[object, BaseException | None], None]:
        return lambda outputs, error: events.append(f"{name} answered")

    config = BatchConfig(max_batch_size=2, max_queue_delay=0, dispatch_when_idle=True, max_inflight_batches=1)
    batcher = Batcher(model, config, clock=FakeClock())
    batcher.enqueue(rows(1.0), delivered=answer("first"))
    await settle()
    batcher.enqueue(rows(2.0), delivered=answer("second"))  # queued behind the batch the model holds
    batcher.enqueue(rows(3.0), delivered=answer("third"))
    gates[0].set()
    await settle()
    assert events == ["model runs [1.0]", "model runs [2.0, 3.0]", "first answered"]
    gates[1].set()
    await settle()
    assert events[3:] == ["second answered", "third answered"]


@pytest.mark.parametrize("waiting", [0, 1])
async def test_with_less_than_a_full_batch_waiting_a_finished_batch_is_answered_in_the_step_that_ends_it(
        waiting: int) -> None:
    """Those waiting may yet gather company: the next batch forms as before, after the answers."""
    answered: list[str] = []
    gate = asyncio.Event()

    async def model(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        await gate.wait()
        return {"y": inputs["x"] * 2}

    batcher = Batcher(model, BatchConfig(max_batch_size=2, max_queue_delay=0, dispatch_when_idle=True),
                      clock=FakeClock())
    batcher.enqueue(rows(1.0), delivered=lambda outputs, error: answered.append("first"))
    await settle()
    for value in range(waiting):
        batcher.enqueue(rows(2.0 + value), delivered=lambda outputs, error: answered.append("waiting"))
    gate.set()
    await asyncio.sleep(0)  # the model's batch task resumes, ends and splits in this one step
    await asyncio.sleep(0)
    assert answered == ["first"]
