"""When to dispatch: a pure function of a queue snapshot and the time.

Kept apart from the loop that waits (as Triton's scheduler does) so the rule
can be tested as a table, with no event loop. The rule:

1. nothing queued: wait for a submit;
2. draining (closing), or ``dispatch_when_idle`` and the model is idle:
   dispatch what is there at once (waiting would leave the model idle). The
   batcher calls the model busy while the loop's CPU is saturated and more
   requests are on their way (docs/scheduling.md#dispatch-when-idle);
3. rows >= max_batch_size: dispatch max_batch_size;
4. rows is a preferred size: dispatch it; rows above the largest preferred
   size: dispatch that size (waiting longer buys nothing);
5. the oldest request has waited max_queue_delay: dispatch what is there;
6. otherwise wait until that moment.

The batch loop applies the rule only while a worker slot is free; the slots
are the batcher's own count (``max_inflight_batches``). When to wake a loop
that sleeps on a Wait is derived from the same rule (``should_wake``), so the
two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .config import BatchConfig


@dataclass(frozen=True)
class QueueSnapshot:
    rows: int  # rows that may share the next batch (same shapes as the head request)
    oldest_arrival: float  # arrival time of the oldest of those rows' requests
    closing: bool = False
    idle: bool = False  # no batch is computing (and no reason to wait for company: Batcher._snapshot)
    deadline: float | None = None  # earliest deadline queued (scheduling: slo; None under the fixed rule)


@dataclass(frozen=True)
class Dispatch:
    rows: int


@dataclass(frozen=True)
class Wait:
    until: float | None  # None: until something is submitted


def decide(snapshot: QueueSnapshot, now: float, config: BatchConfig) -> Dispatch | Wait:
    rows = snapshot.rows
    if rows <= 0:
        return Wait(None)
    if snapshot.closing or rows >= config.max_batch_size or (config.dispatch_when_idle and snapshot.idle):
        return Dispatch(min(rows, config.max_batch_size))
    preferred = config.preferred_batch_sizes
    if preferred:
        if rows in preferred:
            return Dispatch(rows)
        if rows > preferred[-1]:
            return Dispatch(preferred[-1])
    due = snapshot.oldest_arrival + config.max_queue_delay
    if now >= due:
        return Dispatch(rows)
    return Wait(due)


Rule = Callable[[QueueSnapshot, float], Dispatch | Wait]


def should_wake(asleep_on: Wait, snapshot: QueueSnapshot, now: float, config: BatchConfig,
                rule: Rule | None = None) -> bool:
    """Whether a loop asleep on ``asleep_on`` must look again, now that the queue reads ``snapshot``.

    Called on each submit and each finished batch, so it is the rule itself rather
    than a copy of it: wake iff it now says dispatch, or wait less long than the loop
    sleeps. A later ``until`` needs no wake: the loop's own timer comes first. ``rule``:
    the batcher's rule when it is not ``decide`` (``slo.decide`` with its cost model bound).
    """
    fresh = decide(snapshot, now, config) if rule is None else rule(snapshot, now)
    if isinstance(fresh, Dispatch):
        return True
    return fresh.until is not None and (asleep_on.until is None or fresh.until < asleep_on.until)
