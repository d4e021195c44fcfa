"""A front end's requests waiting for a restarting model engine, sent to the new one once it is ready.

When the engine link drops, every request the front end had sent and not yet had answered is kept here
(its tensors are still in the front end's arena), and so is every new request until the engine is back.
When the replacement engine announces its loaded catalog, each is sent to it exactly once, in arrival
order. An answer that arrived before the drop is never sent again: its request left the front end's
books when it did, and the old engine's connection is gone, so nothing of it can arrive twice.

Bounds: a request waits until its deadline (then 504, as in a queue); one in flight without a deadline
waits ``engine_restart_hold_s`` from the drop, a new one that long from its arrival and only while fewer
than ``engine_restart_hold_requests`` new ones wait (503 with Retry-After beyond: the time the engine is
expected back). A request in flight at more than ``REPLAYS`` engine stops in a row is not sent again:
it may be what stops them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from batching import DeadlineExceeded
from server.multiprocess.messages import Submit
from server.observability.engine_restarts import HoldMetrics
from server.runtime import WorkerCrashed

log = logging.getLogger(__name__)
REPLAYS = 2  # engine stops a request may be in flight at and still be sent again


class EngineRestarting(WorkerCrashed):
    """The model engine is restarting and the request could not wait for it (HTTP 503 with Retry-After)."""


@dataclass(eq=False)
class Waiting:
    """One request kept for the next engine: what it was sent as, its answer's future (None once its client
    left) and its slot in the front end's arena."""

    submit: Submit
    future: asyncio.Future[Any] | None
    offset: int | None
    replays: int = 0  # engine stops it was in flight at
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def requests(self) -> int:
        """Client requests it carries (a group's members travel as one)."""
        return self.submit.members


class RestartHold:
    """The requests waiting for the engine, by request id (arrival order), and when it is expected back."""

    def __init__(self, hold_s: float, max_new: int, metrics: HoldMetrics, free: Callable[[int], None]) -> None:
        self.hold_s = hold_s
        self.max_new = max_new
        self.metrics = metrics
        self._free = free  # frees a slot of the front end's arena
        self._waiting: dict[int, Waiting] = {}
        self._new = 0  # how many of them arrived during the outage
        self._sent_again: dict[int, int] = {}  # the last ready()'s requests sent again: their engine stops so far
        self.since: float | None = None  # time.monotonic() of the drop; None while the engine is there
        self.expected_s = 0.0  # how long the engine takes to come back: its last restart, or its first start

    @property
    def open(self) -> bool:
        """Whether new requests may wait (the engine is away after having been there, and holding is on)."""
        return self.since is not None and self.hold_s > 0

    def _requests(self) -> int:
        return sum(entry.requests for entry in self._waiting.values())

    def dropped(self, pending: Iterable[tuple[asyncio.Future[Any] | None, int | None, tuple[Any, ...]]],
                holding: bool, quiet: bool = False) -> bool:
        """The engine link dropped with ``pending`` (future, arena slot, message) unanswered: with ``holding``
        (and holding on), the requests among them wait for the next engine and so will new ones (True);
        otherwise they and the control calls fail with 503. ``quiet``: nothing to log (the front end closes,
        or the link never served: one made while the dead engine's socket was still closing)."""
        holding = holding and self.hold_s > 0
        now = time.monotonic()
        if holding and self.since is None:
            self.since = now
        sent_again, self._sent_again = self._sent_again, {}
        for future, offset, message in pending:
            if future is None or future.done():  # its client left: nothing to send again
                self._release(offset)
            elif not holding or not isinstance(message, Submit):
                self._release(offset)
                future.set_exception(WorkerCrashed("the model engine stopped while this request was in flight; "
                                                   "it is being restarted"))
            elif (replays := sent_again.get(message.rid, 0) + 1) > REPLAYS:
                self._release(offset)
                future.set_exception(EngineRestarting(
                    f"the model engine stopped {replays} times in a row while this request was in flight; it is "
                    "not sent again (it may be what stops it)"))
            else:
                self._keep(Waiting(message, future, offset, replays), now + self.hold_s)
        self._waiting = dict(sorted(self._waiting.items()))
        if not quiet:
            log.error("the model engine went away; %s", f"{self._requests()} requests wait for its replacement "
                      f"(engine_restart_hold_s={self.hold_s:g})" if holding else "requests in flight fail with 503")
        return holding

    def wait(self, submit: Submit, offset: int | None) -> asyncio.Future[Any]:
        """A new request while no engine is ready: the future of its answer, once it has waited for one;
        WorkerCrashed at once (its slot freed) when the hold is full or not open (the first engine loading)."""
        if not self.open or self._new + submit.members > self.max_new:
            self._release(offset)
            if not self.open:
                raise WorkerCrashed("the model engine is not connected (starting or restarting)")
            raise self._refusal(f"{self._new} requests already wait for it (engine_restart_hold_requests)")
        self._new += submit.members
        self.metrics.held.inc(submit.members)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._keep(Waiting(submit, future, offset), time.monotonic() + self.hold_s)
        return future

    def _keep(self, entry: Waiting, hold_until: float) -> None:
        deadline = entry.submit.deadline
        until = hold_until if deadline is None else deadline
        if deadline is not None and not entry.replays:
            until = min(until, hold_until)  # a new request waits no longer than the hold
        delay = max(0.0, until - time.monotonic())
        entry.timer = asyncio.get_running_loop().call_later(delay, self._expire, entry.submit.rid)
        self._waiting[entry.submit.rid] = entry
        self.metrics.waiting.inc(entry.requests)

    def _expire(self, rid: int) -> None:
        entry = self._pop(rid)
        if entry is None:
            return
        self._release(entry.offset)
        if entry.future is None or entry.future.done():
            return
        deadline = entry.submit.deadline
        if deadline is not None and deadline <= time.monotonic() + 1e-3:
            entry.future.set_exception(DeadlineExceeded(
                "the request's deadline passed while it waited for the model engine to restart"))
        else:
            entry.future.set_exception(self._refusal(f"this request waited {self.hold_s:g} s for it "
                                                     "(engine_restart_hold_s)"))

    def _refusal(self, why: str) -> EngineRestarting:
        error = EngineRestarting(f"the model engine is restarting and {why}; retry shortly")
        assert self.since is not None
        error.retry_after = max(0.0, self.since + self.expected_s - time.monotonic())  # type: ignore[attr-defined]
        return error

    def _pop(self, rid: int) -> Waiting | None:
        entry = self._waiting.pop(rid, None)
        if entry is not None:
            self.metrics.waiting.dec(entry.requests)
            if entry.timer is not None:
                entry.timer.cancel()
            if not entry.replays:
                self._new -= entry.requests
        return entry

    def _release(self, offset: int | None) -> None:
        if offset is not None:
            self._free(offset)

    def left(self, rid: int) -> bool:
        """The client of ``rid`` left: if it waits here, it is forgotten and its slot freed (True)."""
        entry = self._pop(rid)
        if entry is None:
            return False
        self._release(entry.offset)
        return True

    def ready(self) -> list[Waiting]:
        """The new engine is ready: every waiting request whose client is still there, in arrival order, to be
        sent to it (slots of the others freed). Remembers how long the engine took to come back."""
        if self.since is not None:
            self.expected_s = time.monotonic() - self.since
        self.since = None
        self._sent_again = {}
        waited = self._requests()
        send = []
        for rid in list(self._waiting):
            entry = self._pop(rid)
            assert entry is not None
            if entry.future is None or entry.future.done():
                self._release(entry.offset)
                continue
            if entry.replays:
                self.metrics.replayed.inc(entry.requests)
                self._sent_again[rid] = entry.replays
            send.append(entry)
        log.warning("the model engine is back after %.2f s; %d of the %d requests that waited for it sent to it",
                    self.expected_s, sum(entry.requests for entry in send), waited)
        return send

    def fail_all(self, error_text: str) -> None:
        """The front end closes: whatever still waits fails."""
        for rid in list(self._waiting):
            entry = self._pop(rid)
            assert entry is not None
            self._release(entry.offset)
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(EngineRestarting(error_text))
