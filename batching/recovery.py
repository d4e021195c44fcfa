"""Batches whose worker died or hung (``run_batch`` raised ComputeLost): run again, then bisected.

Inference is a pure function of its inputs, so a lost batch may run again. If the retry is lost
too, its rows are split in halves, and halves that are lost again split again, until single rows
that kill a worker on their own are found: only their requests fail (PoisonInput), and the rows
are quarantined. All of it runs in the lost batch's own worker slot.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from .clock import Clock
from .config import BatchConfig
from .errors import ComputeLost, DeadlineExceeded, PoisonInput
from .observer import BatchObserver
from .quarantine import Quarantine, row_digest
from .request import Request, Segment

log = logging.getLogger("batching.batcher")


class LostBatchRecovery:
    """The batcher's recovery of lost batches; ``compute`` runs segments as one batch and delivers them,
    ``fail`` settles a request with an error."""

    def __init__(self, config: BatchConfig, clock: Clock, observer: BatchObserver,
                 compute: Callable[[list[Segment]], Awaitable[object]],
                 fail: Callable[[Request, BaseException], None], name: str = "") -> None:
        self.config = config
        self.clock = clock
        self._observer = observer
        self._compute = compute
        self._fail = fail
        self._named = f" {name}" if name else ""
        self.quarantine = Quarantine()

    async def recover(self, segments: list[Segment], error: ComputeLost) -> bool:
        """A batch whose worker died or hung: run it again; if that is lost too, bisect it so that
        only the rows that kill a worker on their own fail. True if every live request was answered."""
        if self.config.retry_lost_batches < 1:
            for request, _, _ in segments:
                self._fail(request, error)
            return False
        log.warning("batch of %d rows%s lost its worker (%s); running it again",
                    sum(n for _, _, n in segments), self._named, error)
        live = self._still_wanted(segments)
        for attempt in range(2, self.config.retry_lost_batches + 2):
            if not live:
                return True
            try:
                await self._compute(live)
                return True
            except ComputeLost as again:
                self._observer.batch_lost(sum(n for _, _, n in live), attempt)
                error = again
                live = self._still_wanted(live)
        return await self._bisect(live, error, self.config.retry_lost_batches + 2)

    async def _bisect(self, segments: list[Segment], error: ComputeLost, attempt: int) -> bool:
        """Run each half of lost rows on its own, recursing into halves that are lost again; a lost
        single row is poison: its request fails, and the row is quarantined."""
        if not segments:
            return True
        if sum(n for _, _, n in segments) == 1:
            self._poisoned(segments[0], error)
            return False
        answered = True
        for half in halves(segments):
            live = self._still_wanted(half)
            if not live:
                continue
            try:
                await self._compute(live)
            except ComputeLost as again:
                self._observer.batch_lost(sum(n for _, _, n in live), attempt)
                answered = await self._bisect(self._still_wanted(live), again, attempt + 1) and answered
            except Exception as failure:  # the model's own error on these rows: theirs alone
                for request, _, _ in live:
                    self._fail(request, failure)
                answered = False
        return answered

    def _still_wanted(self, segments: list[Segment]) -> list[Segment]:
        """The segments worth running again: requests not yet settled, and not past their deadline
        (those get DeadlineExceeded here, as in the queue)."""
        now = self.clock.now()
        live: list[Segment] = []
        for segment in segments:
            request = segment[0]
            if request.future.done():
                continue
            if request.deadline is not None and request.deadline <= now:
                self._observer.rejected("deadline", request.rows - request.done_rows, request.members)
                self._fail(request, DeadlineExceeded("the request's deadline passed while its batch was "
                                                     "run again after its worker was lost"))
                continue
            live.append(segment)
        return live

    def _poisoned(self, segment: Segment, error: ComputeLost) -> None:
        request, start, _ = segment
        quarantine = self.config.poison_quarantine
        if quarantine > 0:
            self.quarantine.add(row_digest(request.inputs, start), self.clock.now() + quarantine)
        log.error("model%s: one input row killed its worker again when run alone (%s); its request fails "
                  "and identical rows are refused for %g s", self._named, error, quarantine)
        # A front end's group is failed whole and resubmitted one request at a time by the front end:
        # the quarantine then refuses (and counts) the poison request alone.
        self._observer.rejected("poison", request.rows - request.done_rows,
                                request.members if request.members == 1 else 0)
        self._fail(request, PoisonInput(
            f"the input crashed the model{self._named}: its worker died running it, and again running it "
            f"alone; it was not run a third time ({error})"))


def halves(segments: list[Segment]) -> tuple[list[Segment], list[Segment]]:
    """Split segments into two runs of (nearly) equal rows, cutting one segment if need be."""
    half = sum(n for _, _, n in segments) // 2
    first: list[Segment] = []
    second: list[Segment] = []
    taken = 0
    for request, start, n in segments:
        if taken >= half:
            second.append((request, start, n))
        elif taken + n <= half:
            first.append((request, start, n))
        else:
            cut = half - taken
            first.append((request, start, cut))
            second.append((request, start + cut, n - cut))
        taken += n
    return first, second
