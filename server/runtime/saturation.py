"""Whether the CPU an event loop runs on is saturated: what ``dispatch_when_idle`` asks before it sends a
batch of a few rows at once.

An idle model is a reason to dispatch at once only while CPU is to spare. A batch costs the event loop and
the model's thread about as much CPU at 4 rows as at 32 (the hop to the thread and back, its GIL handoffs,
the books), so on a saturated core small batches take the CPU that reading requests needs, while the
requests wait in the front end anyway. Then the batch fills for ``max_queue_delay`` instead
(docs/scheduling.md#dispatch-when-idle).

Read from the CPU clocks, with no timer: over windows of ``WINDOW`` seconds, renewed when asked, the loop
thread's CPU time (``time.thread_time``: the batchers ask on the loop's thread) against wall time, and the
whole process's (``time.process_time``) against the cores it may run on. The process counts only while the
loop itself used at least ``MIN_LOOP_SHARE`` of a core: a model computing on every core while the loop
idles is no reason to hold the next lone request.
"""

from __future__ import annotations

import os
import time

WINDOW = 0.02  # seconds of CPU time one reading covers
MIN_LOOP_SHARE = 0.25  # of a core: below it the loop is not what keeps the process busy


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform says)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LoopSaturation:
    """Call it on the event loop's thread: True while the loop's CPU was saturated in the latest window."""

    def __init__(self, share: float, window: float | None = None, cores: int | None = None) -> None:
        self.share = share  # of a core (the loop thread) or of every usable core (the process)
        self.window = WINDOW if window is None else window
        self.cores = cores or usable_cores()
        self.saturated = False
        self._at, self._thread, self._process = time.perf_counter(), time.thread_time(), time.process_time()

    def __call__(self) -> bool:
        now = time.perf_counter()
        span = now - self._at
        if span >= self.window and span > 0:
            thread, process = time.thread_time(), time.process_time()
            loop = (thread - self._thread) / span
            self.saturated = loop >= self.share or (
                loop >= MIN_LOOP_SHARE and (process - self._process) / span >= self.share * self.cores)
            self._at, self._thread, self._process = now, thread, process
        return self.saturated
