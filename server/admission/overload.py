"""Front-end overload: how far behind this process's event loop runs, and whom to refuse for it.

When reading requests, not the model, is the bottleneck (a small model, many small requests),
requests wait in the front end (in socket buffers, then as tasks) before any batcher sees them.
The batcher's admission cannot see that wait, and a request it refuses has been read, decoded and
routed first: on a saturated core a 503 costs what a 200 does, so refusing does not free the core
and every request ends up late. Here the front end measures its own lateness with a timer and,
while it runs more than a share of a model's SLO behind, refuses that model's requests as soon as
their headers are parsed (``scheduling: slo`` models only; ``fixed`` keeps queueing as before).
Such a refusal skips the body, the task and the handler, so the loop can catch up on what it kept
(docs/scheduling.md#front-end-overload says how far that goes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

INTERVAL = 0.002  # seconds between the timer's ticks: how fresh the figure is (idle cost: ~500 wakeups/s)
GRPC_HOLD = 0.01  # a tick's lag counts this long for gRPC calls, which reach their handler some turns after the read
FLOOR = 0.002  # below this lag nothing is refused, whatever the SLO (uvloop's timers fire to the millisecond)


class Overloaded(RuntimeError):
    """The front end runs too far behind to answer this model's request within its SLO (HTTP 503)."""

    retry_after = 1


class LoopLag:
    """The lateness of a timer meant to fire every ``INTERVAL`` seconds: roughly how long a
    callback readied now waits before it runs (``lag``, seconds, the latest tick's).

    Timed with ``time.perf_counter``: uvloop's ``loop.time()`` moves in whole milliseconds, which
    would read an idle loop as a millisecond behind."""

    def __init__(self, interval: float = INTERVAL, observe: Callable[[float], None] | None = None) -> None:
        self.interval = interval
        self.lag = 0.0
        self._observe = observe  # each tick's lag (the lag histogram)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._peak = self._peak_at = 0.0  # the largest lag of the last GRPC_HOLD seconds, and when

    def start(self) -> None:
        self._due = time.perf_counter() + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def behind(self, hold: float = 0.0) -> float:
        """Seconds behind now: the latest tick's lateness, or how overdue the next tick already is (a
        loop that was stalled reads the requests that waited before its timers catch up). With
        ``hold``, the largest lateness of the ticks of the last ``hold`` seconds: for a request judged
        some turns after it was read (a gRPC call reaches its handler later than HTTP's headers)."""
        if self._handle is None:
            return 0.0
        now = time.perf_counter()
        last = self._peak if hold and now - self._peak_at <= hold else self.lag
        return max(last, now - self._due)

    def _tick(self) -> None:
        now = time.perf_counter()
        lag = self.lag = max(0.0, now - self._due)
        if lag >= self._peak or now - self._peak_at > GRPC_HOLD:
            self._peak, self._peak_at = lag, now
        self._due = now + self.interval
        self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)
        if self._observe is not None:
            self._observe(lag)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.lag = self._peak = 0.0


def too_late(lag: float, budget: float, share: float) -> bool:
    """Refuse when the loop's lag is over ``share`` of the request's ``budget`` (its SLO less the
    reserve), and over ``FLOOR``: a request read now waits about one lag to be read, one to reach its
    handler and one to be answered, on top of its batch."""
    return share > 0 and lag > FLOOR and lag > share * budget
