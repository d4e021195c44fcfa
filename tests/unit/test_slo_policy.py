"""SLO scheduling: the rule and the admission prediction as tables, then the batcher that uses them
(a fake clock, a gated fake model, a seeded cost model; no sleeps)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping

import numpy as np
import pytest

from batching import (
    BatchConfig,
    Batcher,
    DeadlineExceeded,
    Dispatch,
    FakeClock,
    QueueFull,
    QueueSnapshot,
    TimedOutputs,
    Wait,
)
from batching.errors import PredictedLate
from batching.slo import completion, decide, drain_seconds, hopeless_before, largest_on_time

from .batching_helpers import FakeModel, RecordingObserver, rows, settle, unexpected


class Linear:
    """A fake cost model: base + per_row * size seconds."""

    def __init__(self, base: float = 0.010, per_row: float = 0.001) -> None:
        self.base, self.per_row = base, per_row

    def predict(self, size: int) -> float:
        return self.base + self.per_row * size


class Queue:
    """What admission reads of the queue: ``rows`` queued, ``below[p]`` of them of a lower priority than p, and
    ``ahead`` counted in queue order (every row unless given); each count in order is recorded in ``scans``."""

    def __init__(self, rows: int, ahead: int | None = None, below: Mapping[int, int] | None = None) -> None:
        self.rows, self._ahead, self._below = rows, ahead, dict(below or {})
        self.scans: list[int] = []

    def rows_below(self, priority: int) -> int:
        return self._below.get(priority, 0)

    def rows_ahead(self, priority: int, deadline: float, now: float) -> int:
        self.scans.append(priority)
        return self.rows if self._ahead is None else self._ahead


COST = Linear()  # c(1) = 11 ms, c(8) = 18 ms, c(32) = 42 ms
SLOW = Linear(0.020, 0.002)  # the same model, twice as slow
SLO = BatchConfig(max_batch_size=32, max_queue_delay=0.005, scheduling="slo", slo=0.250)
EAGER = BatchConfig(max_batch_size=32, max_queue_delay=0.005, scheduling="slo", slo=0.250, dispatch_when_idle=True)
ALLOWED = BatchConfig(max_batch_size=32, max_queue_delay=0.005, scheduling="slo", slo=0.250,
                      allowed_batch_sizes=(8, 16, 32))
PREF = BatchConfig(max_batch_size=32, max_queue_delay=0.005, scheduling="slo", slo=0.250,
                   preferred_batch_sizes=(8, 16))


def snap(rows: int, deadline: float | None, arrival: float = 1.0, idle: bool = False,
         closing: bool = False) -> QueueSnapshot:
    return QueueSnapshot(rows, arrival, closing, idle, deadline)


@pytest.mark.parametrize(
    ("name", "config", "cost", "snapshot", "expected"),
    [
        ("empty", SLO, COST, snap(0, None), Wait(None)),
        ("burst, plenty of slack: a full batch", SLO, COST, snap(40, 2.0), Dispatch(32)),
        ("burst, head due in 30 ms: the largest batch that finishes it in time", SLO, COST, snap(40, 1.030),
         Dispatch(20)),
        ("burst, head hopeless: no smaller batch helps", SLO, COST, snap(40, 1.005), Dispatch(32)),
        ("a few rows, far deadline: the batch grows until max_queue_delay", SLO, COST, snap(5, 1.250), Wait(1.005)),
        ("a few rows: the batch grows until a full batch would make the head late", SLO, COST,
         snap(5, 1.045, arrival=0.999), Wait(1.003)),
        ("waiting any longer would make the head late: dispatch", SLO, COST, snap(5, 1.040), Dispatch(5)),
        ("idle model and dispatch_when_idle: at once", EAGER, COST, snap(5, 1.250, idle=True), Dispatch(5)),
        ("idle model, but the head needs a smaller batch", EAGER, COST, snap(30, 1.030, idle=True), Dispatch(20)),
        ("a batch computes: keep gathering", EAGER, COST, snap(5, 1.250), Wait(1.005)),
        ("draining: what is there", SLO, COST, snap(40, 1.030, closing=True), Dispatch(32)),
        ("no deadline queued: the fixed rule", SLO, COST, snap(5, None), Wait(1.005)),
        ("allowed sizes: the padded size is what costs", ALLOWED, COST, snap(40, 1.030), Dispatch(16)),
        ("allowed sizes: a batch of 9 costs a batch of 16", ALLOWED, COST, snap(12, 1.0255), Dispatch(8)),
        ("preferred size reached", PREF, COST, snap(8, 1.250), Dispatch(8)),
        ("above the largest preferred size", PREF, COST, snap(20, 1.250), Dispatch(16)),
        ("the same queue, the model got slower: a smaller batch", SLO, SLOW, snap(40, 1.060), Dispatch(20)),
        ("the same queue, the model as before: full", SLO, COST, snap(40, 1.060), Dispatch(32)),
        ("slower model: waiting stops sooner", SLO, SLOW, snap(5, 1.086, arrival=0.999), Wait(1.002)),
    ],
)
def test_decide(name, config, cost, snapshot, expected):
    assert decide(snapshot, 1.0, config, cost) == expected, name


@pytest.mark.parametrize(
    ("slack", "config", "expected"),
    [(0.030, SLO, 20), (0.005, SLO, 0), (1.0, SLO, 32), (0.0181, ALLOWED, 8), (0.0259, ALLOWED, 8),
     (0.0261, ALLOWED, 16)],
)
def test_largest_on_time(slack, config, expected):
    assert largest_on_time(32, slack, config, COST) == expected


ONE = BatchConfig(max_batch_size=32, scheduling="slo", slo=0.250)
TWO = BatchConfig(max_batch_size=32, scheduling="slo", slo=0.250, max_inflight_batches=2)


@pytest.mark.parametrize(
    ("config", "ahead", "rows", "free_at", "expected"),
    [
        (ONE, 0, 1, [], 1.011),  # a free slot: its own batch now
        (ONE, 10, 1, [], 1.021),  # shares the next batch with the rows ahead
        (ONE, 0, 1, [1.020], 1.031),  # after the batch computing now
        (ONE, 40, 1, [1.020], 1.081),  # a full batch of 32 first, then 9 rows
        (ONE, 95, 1, [1.020], 1.020 + 2 * 0.042 + 0.042),  # three full batches, its own the third
        (ONE, 0, 1, [0.990], 1.011),  # a batch late on its prediction frees "now"
        (TWO, 40, 1, [1.020], 1.039),  # two slots: the second batch on the slot that frees at 1.020
        (TWO, 0, 1, [1.020], 1.011),
    ],
)
def test_completion(config, ahead, rows, free_at, expected):
    assert completion(1.0, ahead, rows, free_at, config, COST) == pytest.approx(expected)


def test_drain_and_hopeless():
    assert drain_seconds(1.0, 0, [1.020], ONE, COST) == pytest.approx(0.020)
    assert drain_seconds(1.0, 64, [1.020], ONE, COST) == pytest.approx(0.020 + 2 * 0.042)
    assert hopeless_before(1.0, 1, ONE, COST) == -math.inf  # less than a full batch: everything runs
    assert hopeless_before(1.0, 31, ONE, COST) == -math.inf
    assert hopeless_before(1.0, 500, ONE, COST) == pytest.approx(1.042)  # late in a full batch


def test_slo_needs_a_target():
    from batching import InvalidBatchConfig

    with pytest.raises(InvalidBatchConfig, match=r"BatchConfig\.slo"):
        BatchConfig(scheduling="slo")
    with pytest.raises(InvalidBatchConfig, match=r"BatchConfig\.scheduling"):
        BatchConfig(scheduling="fastest")
    with pytest.raises(InvalidBatchConfig, match=r"BatchConfig\.slo_reserve"):
        BatchConfig(scheduling="slo", slo=0.025, slo_reserve=0.025)


def test_the_reserve_is_kept_out_of_every_requests_slo():
    """The scheduler plans each request to finish by arrival + slo - slo_reserve: the rest is the HTTP work
    and the network that the client's latency includes and the batcher does not see."""
    from batching import NullObserver
    from batching.slo import SloState

    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100, slo_reserve=0.005)
    state = SloState(config, NullObserver(), cost=Linear(0.010, 0.0))

    assert state.admit(1, 0, None, 1.0, 1, Queue(0)) == pytest.approx(1.095)
    assert state.admit(1, 0, 1.050, 1.0, 1, Queue(0)) == pytest.approx(1.050)  # its own deadline, if earlier
    # 32 rows ahead: 8 batches of 10 ms, then its own: done at 90 ms, within 95
    assert state.admit(1, 0, None, 1.0, 1, Queue(32)) == pytest.approx(1.095)
    with pytest.raises(PredictedLate):  # 36 ahead: done at 100 ms, within the SLO but not the reserve
        state.admit(1, 0, None, 1.0, 1, Queue(36))


# ---- the batcher under scheduling: slo ------------------------------------------------------------


def make(config: BatchConfig, costs: Mapping[int, float], gated: bool = True):
    clock = FakeClock()
    model = FakeModel(gated=gated)
    observer = RecordingObserver()
    batcher = Batcher(model, config, clock=clock, observer=observer)
    batcher.seed_costs(costs)
    return batcher, model, clock, observer


def spawn(batcher: Batcher, value: float, **kwargs) -> asyncio.Task:
    return asyncio.ensure_future(batcher.submit(rows(value), **kwargs))


def first_values(model: FakeModel) -> list[list[float]]:
    return [b["x"][:, 0].tolist() for b in model.batches]


async def test_a_burst_is_admitted_as_far_as_it_can_finish_in_time():
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100, dispatch_when_idle=True)
    batcher, model, _, observer = make(config, {1: 0.010, 2: 0.015, 4: 0.025})  # c(3) = 20 ms
    computing = spawn(batcher, 0.0)
    await settle()
    assert model.sizes == [1]  # computing until 0.010 (predicted)
    burst = [spawn(batcher, float(i)) for i in range(1, 21)]
    await settle()
    # the k-th of the burst ends at 0.010 + 25 ms per full batch ahead + its own batch: k <= 14 meet 0.100
    refused = [t for t in burst if t.done() and isinstance(t.exception(), PredictedLate)]
    assert len(refused) == 6 and refused == burst[14:]
    assert observer.rejections == [("predicted_late", 1)] * 6
    error = refused[0].exception()
    assert isinstance(error, QueueFull) and error.retry_after == pytest.approx(0.010 + 3 * 0.025 + 0.015)
    model.gate.set()
    await settle()
    assert model.sizes == [1, 4, 4, 4, 2]
    assert computing.done() and all(t.done() and not t.exception() for t in burst[:14])


async def test_a_higher_priority_request_is_admitted_ahead_of_a_long_low_priority_queue():
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100, dispatch_when_idle=True, priority_levels=2)
    batcher, model, _, observer = make(config, {1: 0.025, 4: 0.025})
    spawn(batcher, 0.0)
    await settle()
    low = [spawn(batcher, float(i)) for i in range(1, 14)]
    await settle()
    assert [t.done() for t in low] == [False] * 12 + [True]  # three batches after the computing one fit
    high = spawn(batcher, 99.0, priority=1)
    await settle()
    assert not high.done()  # nothing of its priority ahead: it is next
    model.gate.set()
    await settle()
    assert first_values(model)[1][0] == 99.0
    assert high.result()["y"][0, 0] == 198.0
    assert observer.rejections == [("predicted_late", 1)]


async def test_a_tight_own_deadline_goes_ahead_of_the_slo_deadlines():
    config = BatchConfig(max_batch_size=2, scheduling="slo", slo=1.0, dispatch_when_idle=True)
    batcher, model, _, _ = make(config, {1: 0.010, 2: 0.010})
    spawn(batcher, 0.0)
    await settle()
    queued = [spawn(batcher, float(i)) for i in range(1, 5)]
    urgent = spawn(batcher, 9.0, timeout=0.025)  # 4 rows ahead by count, none by deadline: 20 ms
    await settle()
    assert not urgent.done()
    model.gate.set()
    await settle()
    assert first_values(model)[1][0] == 9.0
    assert all(t.done() for t in [*queued, urgent])


async def test_a_request_whose_deadline_passed_in_the_queue_never_reaches_the_model():
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100, dispatch_when_idle=True)
    batcher, model, clock, observer = make(config, {1: 0.010, 4: 0.010})
    spawn(batcher, 0.0)
    await settle()
    waiting = spawn(batcher, 1.0)  # predicted to end at 0.020
    await settle()
    clock.advance(0.101)  # the computing batch overran past the waiting request's deadline (arrival + slo)
    await settle()
    assert isinstance(waiting.exception(), DeadlineExceeded)
    model.gate.set()
    await settle()
    assert model.sizes == [1]
    assert observer.rejections == [("deadline", 1)]


async def test_a_cost_model_gone_too_pessimistic_is_corrected_by_the_rows_that_still_run():
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.025, dispatch_when_idle=True)
    clock = FakeClock()
    observer = RecordingObserver()
    batcher = Batcher(TimedModel(clock, 0.001), config, clock=clock, observer=observer)
    batcher.seed_costs({1: 0.040, 4: 0.040})  # learned during a stall: a batch "takes" longer than the SLO
    for i in range(12):  # one at a time: nothing ahead, less than a full batch queued: each runs
        assert (await batcher.submit(rows(float(i))))["y"][0, 0] == 2.0 * i
    assert batcher.cost_model.predict(1) < 0.005 and observer.rejections == []


class TimedModel:
    """Doubles ``x`` and takes ``seconds_per_row`` of the fake clock per row."""

    def __init__(self, clock: FakeClock, seconds_per_row: float) -> None:
        self.clock, self.seconds_per_row = clock, seconds_per_row

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.clock.advance(self.seconds_per_row * inputs["x"].shape[0])
        return {"y": inputs["x"] * 2}


async def test_the_cost_model_learns_from_every_batch_at_the_padded_size():
    clock = FakeClock()
    model = TimedModel(clock, 0.005)
    observer = RecordingObserver()
    config = BatchConfig(max_batch_size=4, allowed_batch_sizes=(2, 4), scheduling="slo", slo=1.0,
                         dispatch_when_idle=True)
    batcher = Batcher(model, config, clock=clock, observer=observer)
    for _ in range(3):
        await batcher.submit(rows(1.0, 2.0, 3.0))
    assert batcher.cost_model.estimates() == {4: pytest.approx(0.020)}  # 3 rows padded to 4
    # one size seen (3 times: not yet trusted alone): proportional to the batch size
    assert observer.predicted == {2: pytest.approx(0.010), 4: pytest.approx(0.020)}
    model.seconds_per_row = 0.010  # the model got slower: the window follows
    for _ in range(16):
        await batcher.submit(rows(1.0, 2.0, 3.0))
    assert batcher.cost_model.predict(4) == pytest.approx(0.040)
    assert observer.predicted[4] == pytest.approx(0.040)


async def test_the_fixed_rule_never_refuses_but_still_learns_costs():
    clock = FakeClock()
    observer = RecordingObserver()
    batcher = Batcher(TimedModel(clock, 0.010), BatchConfig(max_batch_size=4, dispatch_when_idle=True), clock=clock,
                      observer=observer)
    batcher.seed_costs({1: 10.0})  # hopelessly slow by the model's account: the fixed rule does not care
    results = await asyncio.gather(*(batcher.submit(rows(float(i)), timeout=0.5) for i in range(12)))
    assert len(results) == 12 and observer.rejections == []
    assert batcher.cost_model.known


async def test_under_overload_requests_late_in_a_full_batch_are_failed_and_the_batch_stays_full():
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100, dispatch_when_idle=True)
    batcher, model, clock, observer = make(config, {1: 0.010, 4: 0.040})  # 10 ms a row
    spawn(batcher, 0.0)
    await settle()
    early = [spawn(batcher, float(i)) for i in range(1, 5)]  # deadline 0.100
    await settle()
    clock.advance(0.030)
    later = [spawn(batcher, float(i)) for i in range(5, 9)]  # deadline 0.130
    await settle()
    clock.advance(0.035)  # 0.065: the computing batch overran; a full batch now ends at 0.105
    model.gate.set()
    await settle()
    # the early four would each finish alone in time, but only in batches too small for the queue
    assert all(isinstance(t.exception(), DeadlineExceeded) for t in early)
    assert model.sizes == [1, 4] and first_values(model)[1] == [5.0, 6.0, 7.0, 8.0]
    assert all(t.result()["y"].shape == (1, 1) for t in later)
    assert observer.rejections == [("deadline", 1)] * 4


def test_admission_grows_careful_when_batches_overrun_their_predictions():
    from batching import NullObserver
    from batching.slo import SloState

    class Frozen(Linear):  # a cost model that has not caught up yet: 10 ms a batch, whatever it sees
        def observe(self, size, seconds):
            return False

    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100)
    state = SloState(config, NullObserver(), cost=Frozen(0.010, 0.0))

    assert state.admit(1, 0, None, 0.0, 1, Queue(28)) == pytest.approx(0.100)  # 8 batches of 10 ms: in time
    for _ in range(8):  # a burst shares the model's core: every batch takes twice its prediction
        state.launched(4, 0.0)
        state.finished(0.020, None, 4, True)
    assert state.margin == pytest.approx(2.0)
    with pytest.raises(PredictedLate):
        state.admit(1, 0, None, 0.0, 1, Queue(28))  # the same queue, planned at 20 ms a batch: 60 ms late


class LaggedModel:
    """Takes ``per_row`` seconds a row on its worker; the batcher sees ``lag`` seconds more a batch (an event
    loop saturated by HTTP). ``timed``: the pool reports the worker's time (``TimedOutputs``), as ours do."""

    def __init__(self, clock: FakeClock, per_row: float, lag: float, timed: bool) -> None:
        self.clock, self.per_row, self.lag, self.timed = clock, per_row, lag, timed
        self.sizes: list[int] = []

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        n = inputs["x"].shape[0]
        self.sizes.append(n)
        self.clock.advance(self.lag + self.per_row * n)
        outputs = {"y": inputs["x"] * 2}
        return TimedOutputs(outputs, self.per_row * n) if self.timed else outputs


@pytest.mark.parametrize("timed", [True, False])
async def test_loop_lag_is_overhead_per_batch_not_the_cost_of_rows(timed):
    """tabular on a core saturated by HTTP: 10 us a row of model time, 5 ms of lag a batch. Learned as the
    model's cost, the lag makes a row cost 5 ms and admission refuses all but the head of the queue
    (batches of one); kept apart, a full batch is planned at 1.3 ms + 5 ms and the burst is served."""
    clock = FakeClock()
    model = LaggedModel(clock, per_row=10e-6, lag=0.005, timed=timed)
    observer = RecordingObserver()
    config = BatchConfig(max_batch_size=128, max_queue_delay=0.001, scheduling="slo", slo=0.025,
                         dispatch_when_idle=True, priority_levels=1)
    batcher = Batcher(model, config, clock=clock, observer=observer)
    for _ in range(16):  # light load: batches of one, each seen as 5.01 ms
        await batcher.submit(rows(1.0))
    burst = [spawn(batcher, float(i)) for i in range(100)]
    results = await asyncio.gather(*burst, return_exceptions=True)
    refused = sum(isinstance(r, PredictedLate) for r in results)
    if timed:
        assert batcher.cost_model.predict(1) == pytest.approx(10e-6)
        assert batcher.cost_model.predict(128) == pytest.approx(1.28e-3)
        assert refused == 0 and model.sizes[16:] == [100]
        assert all(r["y"][0, 0] == 2.0 * i for i, r in enumerate(results))
    else:  # the failure this guards against
        assert batcher.cost_model.predict(1) == pytest.approx(0.00501)
        assert refused > 90


async def test_planned_batches_are_the_tail_of_overruns_plus_the_median_overhead():
    from batching import NullObserver
    from batching.slo import SloState

    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.100)
    class Frozen(Linear):
        def observe(self, size, seconds):
            return False

    state = SloState(config, NullObserver(), cost=Frozen(0.010, 0.0))
    for i in range(10):  # the model overruns by 0..45 %, the batcher sees 1..10 ms more
        state.launched(4, 0.0)
        state.finished(0.010 * (1 + 0.05 * i) + 0.001 * (i + 1), 0.010 * (1 + 0.05 * i), 4, True)
    assert state.margin == pytest.approx(1.45)  # the 95th percentile (of ten: the largest)
    assert state.overhead == pytest.approx(0.0055)  # the median
    assert state.planned.predict(4) == pytest.approx(0.010 * 1.45 + 0.0055)
    assert state.hopeless_before(1.0, 4) == pytest.approx(1.0 + 0.02)


async def test_a_long_queue_is_not_scanned_but_counted_by_priority():
    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=1.0, dispatch_when_idle=True, priority_levels=2,
                         max_queue_size=10_000)
    batcher, model, _, observer = make(config, {1: 0.010, 4: 0.010})
    spawn(batcher, 0.0)
    await settle()
    low = [spawn(batcher, float(i)) for i in range(1, 400)]  # 100 batches of 10 ms would fit in 1 s: 396 admitted
    await settle()
    assert sum(t.done() for t in low) == 399 - 396
    high = spawn(batcher, 99.0, priority=1)  # 400 requests queued: counted by priority, nothing of its level ahead
    await settle()
    assert not high.done()
    model.gate.set()
    await settle()
    assert first_values(model)[1][0] == 99.0


async def test_a_refused_group_counts_nothing_its_members_are_counted_when_resubmitted():
    """A front end's group refused (queue full, predicted late) is resubmitted one request at a time; only
    those count, so a request is never counted twice."""
    from batching.errors import QueueFull as Full

    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.050, max_queue_size=6, dispatch_when_idle=True)
    batcher, _, _, observer = make(config, {1: 0.020, 4: 0.020})
    spawn(batcher, 0.0)
    await settle()  # one row computing, held at the gate
    spawn(batcher, 0.5)
    await settle()  # and one queued
    group = {"x": np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=np.float32)}
    with pytest.raises(PredictedLate):  # 1 + 5 rows: two batches of 20 ms after the one computing: 60 ms > 50
        batcher.enqueue(group, members=5, delivered=unexpected)
    big = {"x": np.zeros((8, 1), dtype=np.float32)}
    with pytest.raises(Full):
        batcher.enqueue(big, members=2, delivered=unexpected)
    with pytest.raises(PredictedLate):
        batcher.enqueue({"x": np.zeros((5, 1), dtype=np.float32)}, delivered=unexpected)
    assert [reason for reason, _ in observer.rejections] == ["predicted_late", "queue_full", "predicted_late"]
    assert observer.rejected_requests == [0, 0, 1]


def test_a_refusal_scans_the_queue_only_when_rows_of_a_lower_priority_could_be_behind_it():
    """Under overload most requests are refused: the common one (default priority, the SLO's deadline) must not
    pay for counting the queue in order; one of a higher priority, with lower rows queued, must."""
    from batching import NullObserver
    from batching.slo import SloState

    config = BatchConfig(max_batch_size=4, scheduling="slo", slo=0.050, priority_levels=3)
    state = SloState(config, NullObserver(), cost=Linear(0.010, 0.0))
    queue = Queue(40, ahead=0, below={2: 40})  # 40 rows queued, all at priority 1
    with pytest.raises(PredictedLate):
        state.admit(1, 0, None, 1.0, 1, queue)
    with pytest.raises(PredictedLate):
        state.admit(1, 1, None, 1.0, 1, queue)
    assert queue.scans == []
    assert state.admit(1, 2, None, 1.0, 1, queue) == pytest.approx(1.050)  # nothing of its own ahead
    assert queue.scans == [2]
