"""SLO-aware scheduling: when to dispatch, how many rows, and whom to refuse at the door.

Pure functions of a queue snapshot, the time and a cost model (``Cost``: seconds a batch
of a given size takes), like ``policy.decide``, so they are tested as tables with a fake
clock and a fake cost model. With ``scheduling: slo`` every request's deadline is the
earlier of its own and its arrival plus ``slo``, and the queue serves the highest
priority first (aged only when ``priority_aging`` is set), then the earliest deadline (the
batcher's order). The rule, while a worker slot is free:

1. nothing queued: wait for a submit; draining: dispatch what is there;
2. the batch is sized so that the most urgent request (the earliest deadline) still
   finishes by its deadline: the largest batch, up to ``max_batch_size`` and the rows
   queued, whose predicted compute ends in time;
3. dispatch at once when a full batch is queued, when ``dispatch_when_idle`` and the
   model is idle (waiting would leave it idle; batches grow while it computes), or when
   the queue reaches a preferred size;
4. otherwise grow the batch: wait until the earlier of ``max_queue_delay`` after the
   oldest arrival and the last moment at which even a full batch would still finish
   the most urgent request in time; then dispatch (waiting longer would make it late).

Before each decision, with a full batch queued, a queued request that would finish late
in it is failed (``hopeless_before``), rather than the batch shrunk to save it: compute
goes to requests that can still be on time, and batches stay full when throughput
matters most. (So rule 2 only shrinks a batch for a
request of another shape or a lower priority, whose deadline the snapshot also sees.)

Predictive admission (``completion``): a new request is predicted to finish after the
rows ahead of it (higher priority, or the same priority and an earlier deadline) have
run in full batches on the worker slots, as they free (``free_at``), followed by its
own batch. If that is after its deadline it is refused at once (``PredictedLate``,
HTTP 503) instead of being computed late. A request with nothing queued ahead of it is
always admitted: no schedule could serve it sooner, and the model never idles while
requests are refused.

What the rule, the early failing and admission plan with (``SloState.planned``) is not
the cost model's median alone but how long a batch really holds its worker slot:

- the model's time (the cost model, learned from the worker's own timing of each batch)
  times ``margin``, how much recent batches overran their predictions (the 95th
  percentile, ``TAIL``, of actual / predicted over the last 64 batches, between 1 and 3): when a
  burst of requests takes the model's core, batches run longer than the cost model says,
  and every plan becomes as much more careful;
- plus ``overhead``, the median of what the batcher saw beyond the model's time over the
  last 64 batches (joining, the hop to the worker and back, event-loop lag), per batch
  whatever its size. Kept apart because no batch size explains it: folded into the cost
  model, the lag of a saturated event loop made a batch of one row look like
  milliseconds, and the scheduler settled into batches of one. The median, not the
  tail: the lag comes and goes with bursts, and a tail estimate let one stall of the
  loop (tens of ms) plan every batch at tens of ms for the next 64, refusing all but
  the head of the queue (seen on tabular, whose batches take 0.2 ms).

Planning with the tail rather than the median is what keeps the 99th percentile of
answered requests within the SLO: a request whose deadline falls inside the median
batch time but not the tail is failed before its batch (504) rather than answered late.
(Only the requests near their deadline in a batch that overruns are late, so the 95th
percentile of batches is enough; planning with the 99th, tried, admitted half as deep a queue.)

Every request is planned to finish by ``slo - slo_reserve`` after it was queued: the
client's latency also holds what the batcher does not see (reading and parsing the
request, encoding and sending the answer, the network), a few milliseconds at the tail.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Protocol

from .config import BatchConfig
from .cost_model import CostModel
from .errors import PredictedLate
from .observer import BatchObserver
from .policy import Dispatch, QueueSnapshot, Wait
from .policy import decide as fixed_decide


class Cost(Protocol):
    def predict(self, size: int) -> float:
        """Seconds a batch of ``size`` rows (padding included) holds a worker slot."""
        ...


class Queued(Protocol):
    """What admission reads of the queue (``queue.RequestQueue``)."""

    rows: int

    def rows_below(self, priority: int) -> int:
        """Queued rows of a lower priority than ``priority``."""
        ...

    def rows_ahead(self, priority: int, deadline: float, now: float) -> int:
        """Queued rows that the queue's order puts before a new request with this priority and deadline."""
        ...


def batch_seconds(rows: int, config: BatchConfig, cost: Cost) -> float:
    """Predicted compute of a batch of ``rows`` real rows, padded as the model will see it."""
    return cost.predict(config.padded_size(rows))


def largest_on_time(rows: int, slack: float, config: BatchConfig, cost: Cost) -> int:
    """The largest batch of at most ``rows`` whose predicted compute fits in ``slack`` seconds (0 if none)."""
    low, high = 0, rows  # low fits (0 trivially), the answer is in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        if batch_seconds(mid, config, cost) <= slack:
            low = mid
        else:
            high = mid - 1
    return low


def decide(snapshot: QueueSnapshot, now: float, config: BatchConfig, cost: Cost) -> Dispatch | Wait:
    """Dispatch(rows) or Wait(until): the SLO rule of this module's docstring."""
    rows = snapshot.rows
    deadline = snapshot.deadline
    if rows <= 0 or snapshot.closing or deadline is None:  # nothing to schedule against: the fixed rule
        return fixed_decide(snapshot, now, config)
    limit = min(rows, config.max_batch_size)
    size = largest_on_time(limit, deadline - now, config, cost) or limit  # none fits: no smaller batch helps
    if rows >= config.max_batch_size or (config.dispatch_when_idle and snapshot.idle):
        return Dispatch(size)
    preferred = config.preferred_batch_sizes
    if preferred and rows in preferred:
        return Dispatch(size)
    if preferred and rows > preferred[-1]:
        return Dispatch(min(size, preferred[-1]))
    latest = deadline - batch_seconds(config.max_batch_size, config, cost)
    due = min(latest, snapshot.oldest_arrival + config.max_queue_delay)
    if now >= due:
        return Dispatch(size)
    return Wait(due)


def hopeless_before(now: float, queued: int, config: BatchConfig, cost: Cost) -> float:
    """With a full batch queued, requests whose deadline is before this moment would finish late in
    it. They are failed rather than the batch shrunk for them: a smaller batch lowers the throughput
    that every request behind them needs (under overload that spirals: smaller batches, more
    requests near their deadlines, smaller batches). With less than a full batch queued nothing
    is failed early (-inf): those rows run, so a cost model that learned too high a cost (batches
    timed while the event loop was saturated) is corrected by them instead of failing everything."""
    if queued < config.max_batch_size:
        return -math.inf
    return now + batch_seconds(config.max_batch_size, config, cost)


def completion(now: float, ahead: int, rows: int, free_at: Sequence[float], config: BatchConfig,
               cost: Cost) -> float:
    """Predicted time at which a request of ``rows`` rows, behind ``ahead`` queued rows, has its outputs.

    ``free_at``: when each busy worker slot is predicted to free (the others are free now).
    The rows ahead and the request's own run in batches of ``max_batch_size``, each on the
    slot that frees first; the request's rows end in the last of them.
    """
    slots = sorted([max(now, t) for t in free_at] + [now] * (config.max_inflight_batches - len(free_at)))
    batch = config.max_batch_size
    total = ahead + rows
    batches = max(1, math.ceil(total / batch))
    last = total - (batches - 1) * batch
    slot, rounds = (batches - 1) % len(slots), (batches - 1) // len(slots)
    return slots[slot] + rounds * batch_seconds(batch, config, cost) + batch_seconds(last, config, cost)


def admit(now: float, deadline: float | None, ahead: int, rows: int, free_at: Sequence[float],
          config: BatchConfig, cost: Cost) -> bool:
    """Whether a request predicted to finish at ``completion(...)`` meets its deadline.

    A request with nothing queued ahead of it is always admitted: it goes in the next batch,
    the best service there is. So a refusal always leaves a queue that keeps the model busy,
    and a cost model or margin that has grown too pessimistic (after a stall) is corrected by
    the batches that still run, instead of refusing everything and learning nothing.
    """
    if deadline is None or ahead == 0:
        return True
    return completion(now, ahead, rows, free_at, config, cost) <= deadline


def drain_seconds(now: float, queued: int, free_at: Sequence[float], config: BatchConfig, cost: Cost) -> float:
    """Predicted seconds until every queued row has run (the Retry-After of a refusal)."""
    if queued <= 0:
        return max([0.0, *(t - now for t in free_at)])
    return completion(now, queued - 1, 1, free_at, config, cost) - now


MAX_MARGIN = 3.0  # a stall (the event loop or the core taken for seconds) must not make admission refuse all


class Planned:
    """A cost model's predictions times ``factor``, plus ``overhead`` seconds per batch."""

    def __init__(self, cost: Cost, factor: float = 1.0, overhead: float = 0.0) -> None:
        self.cost, self.factor, self.overhead = cost, factor, overhead

    def predict(self, size: int) -> float:
        return self.cost.predict(size) * self.factor + self.overhead


TAIL = 0.95  # the plans' quantile of recent batches' overruns of the model's predicted time


def _tail(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(TAIL * len(ordered)))]


def report_sizes(config: BatchConfig) -> tuple[int, ...]:
    """The batch sizes whose predicted compute is reported: the allowed sizes, else powers of two and the max."""
    if config.allowed_batch_sizes:
        return config.allowed_batch_sizes
    sizes, size = [], 1
    while size < config.max_batch_size:
        sizes.append(size)
        size *= 2
    return (*sizes, config.max_batch_size)


class SloState:
    """The batcher's side of SLO scheduling: its cost model, the predicted end of each batch in
    flight, and the rule with both bound. Every batcher keeps one (the cost model and its metric
    are useful under the fixed rule too); only ``scheduling: slo`` acts on it."""

    def __init__(self, config: BatchConfig, observer: BatchObserver, cost: CostModel | None = None) -> None:
        self.config = config
        self.cost = cost or CostModel()
        self.active = config.scheduling == "slo"
        self._observer = observer
        self._sizes = report_sizes(config)
        self._busy: deque[tuple[float, float]] = deque()  # (planned end, the model's predicted seconds)
        self._overrun: deque[float] = deque(maxlen=64)  # the model's actual / predicted seconds, recent batches
        self._beyond: deque[float] = deque(maxlen=64)  # seconds a batch took beyond the model's own, recent
        self.planned = Planned(self.cost)  # what every plan predicts a batch holds its slot for
        self._batches = 0
        self._changed = False  # predictions changed since they were last reported

    @property
    def margin(self) -> float:
        """The plans' factor on the cost model: how much recent batches overran its predictions."""
        return self.planned.factor

    @property
    def overhead(self) -> float:
        """The plans' seconds per batch beyond the model's own (joining, the hop, event-loop lag)."""
        return self.planned.overhead

    def admit(self, rows: int, priority: int, deadline: float | None, now: float, members: int,
              queue: Queued) -> float:
        """A new request's deadline (its own, capped at now + slo), or PredictedLate if it would miss it.

        Every queued row counts as ahead first: exact when the request's deadline is the SLO's
        (every queued deadline is earlier) and no queued row has a lower priority than its own.
        Only a request this bound would refuse and for which it may be wrong (rows of a lower
        priority queued, or a deadline of its own earlier than the SLO's) pays for
        ``queue.rows_ahead``, the count in the queue's order, which the queue bounds. Under overload most
        requests are refused, so the common one must not scan: a scan of 256 queued requests
        per refusal (~130 us) took more of an HTTP-bound event loop than answering, and the
        server spiralled into answering nothing (tabular at 0.8x capacity).
        """
        assert self.config.slo is not None
        target = now + self.config.slo - self.config.slo_reserve
        capped = target if deadline is None else min(deadline, target)
        busy = [end for end, _ in self._busy]
        cost = self.planned
        queued = queue.rows
        if admit(now, capped, queued, rows, busy, self.config, cost):
            return capped
        may_differ = capped < target or queue.rows_below(priority) > 0
        exact = queue.rows_ahead(priority, capped, now) if queued and may_differ else queued
        if exact < queued and admit(now, capped, exact, rows, busy, self.config, cost):
            return capped
        self._observer.rejected("predicted_late", rows, members)
        predicted = completion(now, exact, rows, busy, self.config, cost)
        raise PredictedLate(
            f"refused: with {exact} rows ahead of it, this request would finish about "
            f"{(predicted - now) * 1000:.0f} ms from now, after its deadline "
            f"({(capped - now) * 1000:.0f} ms; slo {self.config.slo * 1000:g} ms)",
            retry_after=drain_seconds(now, queued, busy, self.config, cost))

    def rule(self, snapshot: QueueSnapshot, now: float) -> Dispatch | Wait:
        return decide(snapshot, now, self.config, self.planned)

    def hopeless_before(self, now: float, queued: int) -> float:
        return hopeless_before(now, queued, self.config, self.planned)

    def launched(self, rows: int, now: float) -> None:
        if self.active:  # only admission needs the planned end of each batch in flight
            self._busy.append((now + batch_seconds(rows, self.config, self.planned),
                               batch_seconds(rows, self.config, self.cost)))

    def finished(self, seconds: float, compute: float | None, rows: int, ok: bool) -> None:
        """A batch came back after ``seconds``, of which the model took ``compute`` on its worker (None:
        not timed there, all of it counts as the model's): learn from it (only from batches that succeeded)."""
        model = seconds if compute is None else min(compute, seconds)
        if self._busy:
            _, predicted = self._busy.popleft()
            if ok and predicted > 0:
                self._overrun.append(model / predicted)
                self._beyond.append(seconds - model)
                if len(self._overrun) >= 8:
                    self.planned.factor = min(MAX_MARGIN, max(1.0, _tail(self._overrun)))
                    self.planned.overhead = statistics.median(self._beyond)
        self._batches += 1
        if ok and rows and self.cost.observe(self.config.padded_size(rows), model):
            self._changed = True
        if self._changed and (self._batches <= 8 or self._batches % 8 == 0):  # a report costs ~10 us
            self._report()

    def seed(self, costs: Mapping[int, float]) -> None:
        self.cost.seed(costs)
        self._report()

    def _report(self) -> None:
        self._changed = False
        for size in self._sizes:
            self._observer.predicted_compute(size, self.cost.predict(size))
