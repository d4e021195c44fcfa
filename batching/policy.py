"""When to dispatch: a pure function of a queue snapshot and the time.

Kept apart from the loop that waits (as Triton's scheduler does) so the rule
can be tested as a table, with no event loop. The rule:

1. nothing queued: wait for a submit;
2. draining (closing), or ``dispatch_when_idle`` and no batch is computing:
   dispatch what is there at once (waiting would leave the model idle);
3. rows >= max_batch_size: dispatch max_batch_size;
4. rows is a preferred size: dispatch it; rows above the largest preferred
   size: dispatch that size (waiting longer buys nothing);
5. the oldest request has waited max_queue_delay: dispatch what is there;
6. otherwise wait until that moment.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import BatchConfig


@dataclass(frozen=True)
class QueueSnapshot:
    rows: int  # rows that may share the next batch (same shapes as the head request)
    oldest_arrival: float  # arrival time of the oldest of those rows' requests
    closing: bool = False
    idle: bool = False  # no batch is computing


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
