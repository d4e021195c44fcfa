"""The asyncio dynamic batcher."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Mapping

import numpy as np

from .clock import Clock, LoopClock, TimerHandle
from .config import BatchConfig
from .cost_model import CostModel
from .errors import BatcherClosed, ComputeLost, DeadlineExceeded, InvalidRequest, PoisonInput, QueueFull
from .observer import BatchObserver, NullObserver
from .policy import Dispatch, QueueSnapshot, Wait, decide, should_wake
from .queue import RequestQueue
from .recovery import LostBatchRecovery
from .request import Delivered, Delivery, Request, Segment
from .slo import SloState
from .tensors import Tensors, TimedOutputs, check_outputs, count_rows, join, shape_key, slice_outputs

log = logging.getLogger(__name__)

RunBatch = Callable[[Tensors], Awaitable[Mapping[str, np.ndarray]]]
Ticket = Request  # what enqueue returns, for ``cancel``


class Batcher:
    """Gathers concurrent requests into batches for one model version.

    Latency bound: a request waits at most ``max_queue_delay`` for company once a worker slot is free; a full
    or preferred-size batch leaves at once. Invariants: every accepted request's future is resolved exactly
    once (by its batch, its deadline timer, cancellation or close); a failing batch fails only its own
    requests; only the batch loop task dispatches, and it waits on events and timers, never polls; at most
    ``max_inflight_batches`` batches compute at once (that count is the one record of free worker slots); with
    a full batch waiting, a finished batch is answered once that has gone to the model. Queue order: higher
    priority first (aged only with ``priority_aging``, docs/scheduling.md), then earliest deadline, then arrival.
    """

    def __init__(self, run_batch: RunBatch, config: BatchConfig | None = None, *, clock: Clock | None = None,
                 observer: BatchObserver | None = None, name: str = "", busy: Callable[[], bool] | None = None
                 ) -> None:
        self.config = config or BatchConfig()
        # True while the loop's CPU is saturated: an idle model is then no reason to dispatch (asked only when it is)
        self._busy = busy if self.config.dispatch_when_idle else None
        self._company = False  # a request came while the latest batch computed: more are on their way
        self.name = name  # for log lines: "model:version"
        self.clock: Clock = clock or LoopClock()
        self._run_batch = run_batch
        self._observer: BatchObserver = observer or NullObserver()
        self._queue = RequestQueue(self.config)
        self._seq = itertools.count()
        self._inflight, self._closing = 0, False
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wait_timer: TimerHandle | None = None  # the timer of the Wait the loop sleeps on, if it has a moment
        self._asleep_on: Wait | None = None  # the Wait the loop sleeps on; None: running, waiting for a slot, or woken
        self._deadline_timer: TimerHandle | None = None  # one timer for the earliest deadline queued, not one each
        self._deadline_armed = math.inf
        self.wakeups = 0  # times the batch loop went to sleep and woke again
        self._slo = SloState(self.config, self._observer)  # cost model; acts under scheduling: slo
        self._recovery = LostBatchRecovery(self.config, self.clock, self._observer, self._compute_and_split,
                                           self._fail, name)
        self._row_seconds: float | None = None  # compute seconds per row, smoothed over recent batches

    # ---- public API -------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queue.rows

    @property
    def inflight_batches(self) -> int:
        return self._inflight

    def drain_seconds(self) -> float:
        """Predicted seconds until today's queue has run: rows queued times the measured compute
        seconds per row, over the batches that compute at once (0 before any batch ran)."""
        per_row = self._row_seconds
        return 0.0 if per_row is None else self._queue.rows * per_row / self.config.max_inflight_batches

    @property
    def cost_model(self) -> CostModel:
        """Predicted compute per batch size, learned from every batch (slo.py schedules with it)."""
        return self._slo.cost

    def seed_costs(self, costs: Mapping[int, float]) -> None:
        """Seed the cost model with measured seconds per batch size (the warm-up's)."""
        self._slo.seed(costs)

    def start(self) -> None:
        """Start the batch loop on the running event loop (submit does this lazily)."""
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop())

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None,
                     priority: int = 0, timeout: float | None = None, trace: object = None) -> Tensors:
        """Queue one request (one or more rows) and return its rows of the outputs.

        deadline is on ``self.clock``; timeout (seconds from now) is the
        alternative; with neither, ``config.default_timeout`` applies. ``trace``:
        a sampled request's tracing context, handed to the observer with its batch.
        """
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        ticket = self._admit(inputs, deadline, priority, timeout, 1, trace, future)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(ticket)
            raise

    def enqueue(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: int = 0,
                timeout: float | None = None, members: int = 1, trace: object = None, *,
                delivered: Delivered | Delivery) -> Ticket:
        """``submit`` without a coroutine or a future, for callers that answer many requests (the engine,
        the in-protocol HTTP path): ``delivered(outputs, None)`` or ``(None, error)`` is called once (a Delivery
        of the caller's: its ``deliver``), as the batch is split, unless ``cancel(ticket)`` comes first. Raises
        at once what ``submit`` raises before queueing. ``members``: client requests these rows carry."""
        delivery = delivered if isinstance(delivered, Delivery) else Delivery(delivered)
        return self._admit(inputs, deadline, priority, timeout, members, trace, delivery)

    def _admit(self, inputs: Mapping[str, np.ndarray], deadline: float | None, priority: int,
               timeout: float | None, members: int, trace: object, future: asyncio.Future[Tensors] | Delivery
               ) -> Request:
        rows = count_rows(inputs)
        if self._closing:
            self._observer.rejected("closed", rows, members)
            raise BatcherClosed("the batcher is closed and accepts no new requests")
        if not 0 <= priority < self.config.priority_levels:
            raise InvalidRequest(f"priority must be in 0..{self.config.priority_levels - 1}, got {priority}")
        queue = self._queue
        # A front end's group that is refused is resubmitted one request at a time: only those count.
        alone = 1 if members == 1 else 0
        if queue.rows + rows > self.config.max_queue_size:
            self._observer.rejected("queue_full", rows, alone)
            raise QueueFull(
                f"queue full: {queue.rows} rows waiting, {rows} more would exceed "
                f"max_queue_size={self.config.max_queue_size}", retry_after=self.drain_seconds()
            )
        now = self.clock.now()
        if self._recovery.quarantine.holds(inputs, rows, now):
            self._observer.rejected("poison", rows, alone)
            raise PoisonInput(f"refused: this input crashed the model{self._named()} and is quarantined for up to "
                              f"{self.config.poison_quarantine:g} s (poison_quarantine_s); it was not run")
        if deadline is None:
            wait = timeout if timeout is not None else self.config.default_timeout
            deadline = None if wait is None else now + wait
        if deadline is not None and deadline <= now:
            self._observer.rejected("deadline", rows, members)
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        if self._slo.active:  # its deadline capped at arrival + slo; PredictedLate if it cannot meet it
            deadline = self._slo.admit(rows, priority, deadline, now, alone, queue)
        self.start()
        request = Request(dict(inputs), rows, shape_key(inputs, self.config), priority,
                           deadline, now, next(self._seq), future, members, trace)
        self._enqueue(request)
        return request

    def cancel(self, ticket: Ticket) -> None:
        """Take a request's rows that are still queued off the queue (rows already in a batch run on);
        its future is cancelled if still pending."""
        request = ticket
        if request in self._queue:
            self._observer.rejected("cancelled", request.rows - request.taken, request.members)
            self._dequeue(request)
        if not request.future.done():
            request.future.cancel()

    async def close(self, drain: bool = True) -> None:
        """Stop intake; with drain, run every queued request, else fail them with BatcherClosed. Returns when
        every accepted request has been resolved."""
        self._closing = True
        if not drain:
            for request in self._queue.requests():
                self._observer.rejected("closed", request.rows - request.taken, request.members)
                self._fail(request, BatcherClosed("the batcher closed before this request ran"))
        if self._loop_task is None:
            return
        self._wake()
        await asyncio.shield(self._loop_task)

    # ---- queue bookkeeping ------------------------------------------------------

    def _enqueue(self, request: Request) -> None:
        self._company = self._company or self._inflight > 0
        self._queue.add(request)
        self._observer.queue_depth(self._queue.rows)
        if request.deadline is not None and request.deadline < self._deadline_armed:
            self._arm_deadline_timer()
        if self._asleep_on is not None:  # a submit frees no slot: only a loop asleep on a Wait may care
            self._look_again(self._asleep_on)

    def _dequeue(self, request: Request) -> None:
        self._queue.remove(request)
        self._observer.queue_depth(self._queue.rows)

    def _arm_deadline_timer(self) -> None:
        """Point the one deadline timer at the earliest deadline of a request still queued."""
        earliest = self._queue.earliest_deadline()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._deadline_armed = math.inf if earliest is None else earliest
        if earliest is not None:
            self._deadline_timer = self.clock.call_at(earliest, self._expire_due)

    def _expire_due(self) -> None:
        """Fail every queued request whose deadline has passed; they never reach the model."""
        self._deadline_timer = None
        self._fail_deadlines_through(self.clock.now(), "the request's deadline passed while it was queued")
        self._arm_deadline_timer()

    def _fail_deadlines_through(self, until: float, why: str) -> None:
        """Fail every queued request whose deadline is at or before ``until`` (504, never computed)."""
        for request in self._queue.due(until):
            self._observer.rejected("deadline", request.rows - request.taken, request.members)
            self._fail(request, DeadlineExceeded(why))

    def _fail(self, request: Request, error: BaseException) -> None:
        if request in self._queue:
            self._dequeue(request)
        if not request.future.done():
            request.future.set_exception(error)

    # ---- batch formation --------------------------------------------------------

    def _snapshot(self, now: float) -> tuple[QueueSnapshot, Hashable]:
        if not self._queue:
            return QueueSnapshot(0, now, self._closing, self._inflight == 0), None
        # idle: no batch computing, unless more requests are coming to a saturated CPU (docs/scheduling.md)
        idle = self._inflight == 0 and not (self._company and self._busy is not None and self._busy())
        key, rows, oldest = self._queue.head(now)
        deadline = self._queue.earliest_deadline() if self._slo.active else None
        return QueueSnapshot(rows, oldest, self._closing, idle, deadline), key

    def _expire_hopeless(self, now: float) -> None:
        """scheduling: slo: fail queued requests that would finish late in the batch the queue forms now."""
        cutoff = self._slo.hopeless_before(now, self._queue.rows)  # deadlines strictly before it
        self._fail_deadlines_through(math.nextafter(cutoff, -math.inf),
                                     "the request could no longer finish before its deadline")

    def _take(self, key: Hashable, rows: int, now: float) -> tuple[list[Segment], list[tuple[object, float | None]]]:
        """The next batch's segments, and its traced members with their waits (for the observer)."""
        segments = self._queue.take(key, rows, now)
        traced: list[tuple[object, float | None]] = []
        for request, start, _ in segments:
            if start == 0:
                self._observer.queue_wait(now - request.arrival, request.members)
            if request.trace is not None:
                traced.append((request.trace, now - request.arrival if start == 0 else None))
        self._observer.queue_depth(self._queue.rows)
        return segments, traced

    # ---- the loop ---------------------------------------------------------------

    async def _sleep(self, asleep_on: Wait | None) -> None:
        """Sleep on a Wait of the dispatch rule, or (None) until a batch finishes and frees a slot.
        Only a Wait with a moment arms a timer: a loop waiting for a submit (or a slot) is woken by it."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiter, self._asleep_on = waiter, asleep_on
        until = None if asleep_on is None else asleep_on.until
        self._wait_timer = self.clock.call_at(until, self._wait_timer_fired) if until is not None else None
        try:
            await waiter
        finally:
            self.wakeups += 1
            self._waiter, self._asleep_on = None, None
            if self._wait_timer is not None:
                self._wait_timer.cancel()
                self._wait_timer = None

    def _wait_timer_fired(self) -> None:
        """Wake the loop at the moment it sleeps until. A timer may fire before it: a loop clock that
        counts whole milliseconds (uvloop's) does. Then the loop sleeps on, and the timer is armed again
        for the rest (LoopClock rounds that up to a whole millisecond under uvloop: never a spin)."""
        self._wait_timer = None
        asleep_on = self._asleep_on
        if asleep_on is not None and asleep_on.until is not None and self.clock.now() < asleep_on.until:
            self._wait_timer = self.clock.call_at(asleep_on.until, self._wait_timer_fired)
            return
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
            self._asleep_on = None  # woken: later events need not ask again

    def _look_again(self, asleep_on: Wait) -> None:
        """After a submit or a finished batch, wake the loop iff the dispatch rule now says so."""
        now = self.clock.now()
        snapshot, _ = self._snapshot(now)
        if should_wake(asleep_on, snapshot, now, self.config, self._slo.rule if self._slo.active else None):
            self._wake()

    async def _batch_loop(self) -> None:
        while True:
            if self._inflight >= self.config.max_inflight_batches:
                await self._sleep(None)  # only a finishing batch frees a slot
                continue
            now = self.clock.now()
            if self._slo.active:
                self._expire_hopeless(now)
            snapshot, key = self._snapshot(now)
            decision = self._slo.rule(snapshot, now) if self._slo.active else decide(snapshot, now, self.config)
            if isinstance(decision, Dispatch):
                self._launch(*self._take(key, decision.rows, now))
                continue
            if self._closing and not self._queue:
                break
            assert isinstance(decision, Wait)
            await self._sleep(decision)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _launch(self, segments: list[Segment], traced: list[tuple[object, float | None]]) -> None:
        self._slo.launched(sum(n for _, _, n in segments), self.clock.now())
        self._inflight += 1
        self._company = False
        self._observer.inflight_batches(self._inflight)
        task = asyncio.get_running_loop().create_task(self._run(segments, traced))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, segments: list[Segment], traced: list[tuple[object, float | None]]) -> None:
        rows = sum(n for _, _, n in segments)
        padded = self.config.padded_size(rows)
        self._observer.batch_formed(rows, padded - rows)
        ran = self._observer.batch_traced(traced, rows) if traced else None
        started = self.clock.now()
        ok = lost = False
        outputs: Mapping[str, np.ndarray] | None = None  # split after the books are kept: a Delivery answers in it
        try:
            try:
                outputs = await self._compute(segments)
                ok = True
            except ComputeLost as error:
                lost = True  # its time includes worker restarts: not a measure of the model
                self._observer.batch_lost(rows, 1)
                ok = await self._recovery.recover(segments, error)
        except asyncio.CancelledError:
            for request, _, _ in segments:
                self._fail(request, BatcherClosed("the batch was cancelled"))
            raise
        except Exception as error:  # the model's failure is its batch's, never the batcher's
            log.debug("batch of %d rows failed: %r", rows, error)
            for request, _, _ in segments:
                self._fail(request, error)
        finally:
            self._inflight -= 1
            elapsed = self.clock.now() - started
            if ok and rows and not lost:
                per_row = elapsed / rows
                self._row_seconds = per_row if self._row_seconds is None else 0.8 * self._row_seconds + 0.2 * per_row
            self._observer.batch_computed(elapsed, rows, ok)
            if ran is not None:
                ran(ok)
            compute = outputs.seconds if isinstance(outputs, TimedOutputs) else None  # the model's own, if timed
            self._slo.finished(elapsed, compute, rows, ok and not lost)
            self._observer.inflight_batches(self._inflight)
            if self._asleep_on is None:
                self._wake()  # it waited for this slot (or is not asleep: then a no-op)
            else:
                self._look_again(self._asleep_on)
        if outputs is not None:
            try:  # with a full batch waiting, it first goes to the model: it runs while these are answered
                if self._queue.rows >= self.config.max_batch_size:  # two turns: the loop launches it, it hands over
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            finally:
                self._split(segments, outputs)

    async def _compute(self, segments: list[Segment]) -> Mapping[str, np.ndarray]:
        """Run these rows as one batch: its outputs (``TimedOutputs`` when the pool timed the model)."""
        padded = self.config.padded_size(sum(n for _, _, n in segments))
        parts = [r.inputs if n == r.rows else {k: v[s : s + n] for k, v in r.inputs.items()} for r, s, n in segments]
        return check_outputs(await self._run_batch(join(parts, padded, self.config)), padded)

    async def _compute_and_split(self, segments: list[Segment]) -> None:  # a lost batch's retry
        self._split(segments, await self._compute(segments))

    def _split(self, segments: list[Segment], outputs: Mapping[str, np.ndarray]) -> None:
        """Hand each request its rows of the outputs; if splitting fails, so do its requests not yet answered."""
        offset = 0
        try:
            for request, start, n in segments:
                request.deliver(start, n, slice_outputs(outputs, offset, n, request.inputs, self.config))
                offset += n
        except Exception as error:
            for request, _, _ in segments:
                self._fail(request, error)

    def _named(self) -> str:
        return f" {self.name}" if self.name else ""
