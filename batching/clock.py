"""Clocks: the batcher reads time and sets timers only through one of these.

Injecting the clock (as TensorFlow's FakeClockEnv does) keeps the batcher's
tests deterministic: no sleeps, no timing assertions.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds plus one-shot timers on the running event loop."""

    def now(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """Monotonic time (never wall-clock time, which jumps with NTP), timers on the running loop.

    ``now()`` is ``time.monotonic()`` rather than ``loop.time()``: uvloop's loop time has
    millisecond resolution, too coarse for sub-millisecond queue and compute durations.
    For the same reason a uvloop timer less than a millisecond ahead fires at once, and the
    batch loop would wake, find the moment not yet come, and sleep again, up to a hundred
    times a request; under uvloop the delay is rounded up to whole milliseconds. Even so a
    uvloop timer can fire up to a millisecond early (its loop time is read once a turn): the
    batcher then arms its wait timer again for the rest rather than waking its loop.
    """

    def now(self) -> float:
        return time.monotonic()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        delay = when - time.monotonic()
        if delay > 0 and type(loop).__module__.startswith("uvloop"):
            delay = math.ceil(delay * 1000.0) / 1000.0
        return loop.call_later(delay, callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when told to; timers fire inside advance().

    ``early``: a timer armed more than that many seconds ahead fires that much before its moment, as
    the timers of a loop clock counting whole milliseconds can (uvloop's); one armed closer fires on time.
    """

    def __init__(self, start: float = 0.0, early: float = 0.0) -> None:
        self._now = start
        self.early = early
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(when, callback)
        fires = when - self.early if when - self._now > self.early else when
        heapq.heappush(self._timers, (fires, next(self._seq), timer))
        return timer

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in order."""
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            if not timer.cancelled:
                timer.callback()
        self._now = target
