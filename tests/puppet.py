"""A puppet batcher: a model version's batcher stand-in whose batches the test releases itself.

It records every request submitted to it (validated inputs, priority, deadline) and leaves each one
pending until the test resolves or fails it; a request whose caller goes away (a client that
disconnects) is marked cancelled. The test waits on that state (``await puppet.submitted(2)``,
``await entry.cancelled.wait()``), never on sleeps, so what happens in between is certain.

It has the batcher's interface as the server uses it (``submit``, ``close``); tests/harness.py puts
it in place of a loaded version's batcher.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from batching import BatcherClosed

Tensors = dict[str, np.ndarray]
WAIT = 10.0  # seconds a wait for the server's state may take before the test fails (never a pacing delay)


@dataclass(eq=False)
class Submitted:
    """One request as the batcher received it, pending until the test settles it."""

    inputs: Mapping[str, np.ndarray]
    priority: int
    deadline: float | None  # on time.monotonic(), the batcher's clock; None: no deadline
    future: asyncio.Future[Tensors]
    extra: dict[str, Any] = field(default_factory=dict)  # any other keyword the caller passed
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def time_left(self) -> float | None:
        """Seconds until its deadline, as of now (None: it has none)."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def resolve(self, outputs: Mapping[str, Any]) -> None:
        """Answer it with these outputs (arrays, or anything numpy makes one of)."""
        self.future.set_result({name: np.asarray(value) for name, value in outputs.items()})

    def fail(self, error: BaseException) -> None:
        """Answer it with this error, as a batcher raises it."""
        self.future.set_exception(error)

    @property
    def settled(self) -> bool:
        return self.future.done()


class _Watched:
    """State a test waits on: every change wakes the waiters, which check their condition again."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _waiting(self) -> int:
        raise NotImplementedError

    async def until(self, condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        """Wait until ``condition()`` holds, checked again on every change."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {what} "
                                 f"({self._waiting()} waiting)") from None


class PuppetBatcher(_Watched):
    """Records submitted requests; the test resolves or fails each (``answer`` does both by a rule)."""

    def __init__(self, name: str = "puppet") -> None:
        super().__init__(name)
        self.received: list[Submitted] = []  # every request, in the order submitted
        self.closed = False

    def _waiting(self) -> int:
        return len(self.pending)

    @property
    def pending(self) -> list[Submitted]:
        """Requests submitted and neither settled nor cancelled, oldest first."""
        return [entry for entry in self.received if not entry.settled]

    # ---- the Batcher's interface ----

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: int = 0,
                     timeout: float | None = None, **extra: Any) -> Tensors:
        entry = self.enqueue(inputs, deadline, priority, timeout, **extra)
        try:
            return await entry.future
        except asyncio.CancelledError:
            self.cancel(entry)
            raise

    def enqueue(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: int = 0,
                timeout: float | None = None, **extra: Any) -> Submitted:
        """``submit`` without a coroutine: the request's ticket, whose ``future`` the test settles."""
        if self.closed:
            raise BatcherClosed("the batcher is closed and accepts no new requests")
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        entry = Submitted(dict(inputs), priority, deadline, asyncio.get_running_loop().create_future(), extra)
        self.received.append(entry)
        self._notify()
        return entry

    def cancel(self, entry: Submitted) -> None:
        """Its caller went away: marked cancelled, and no longer pending."""
        entry.cancelled.set()
        if not entry.future.done():
            entry.future.cancel()
        self._notify()

    @property
    def queued_rows(self) -> int:
        return sum(entry.rows for entry in self.pending)

    @property
    def inflight_batches(self) -> int:
        return 0

    def drain_seconds(self) -> float:
        return 0.0

    async def close(self, drain: bool = True) -> None:
        """Intake stops; what is still pending fails as a closed batcher's requests do."""
        self.closed = True
        for entry in self.pending:
            entry.fail(BatcherClosed("the batcher closed before this request ran"))

    async def submitted(self, count: int = 1, timeout: float = WAIT) -> list[Submitted]:
        """Wait until ``count`` requests are pending; return the pending ones, oldest first."""
        await self.until(lambda: len(self.pending) >= count, f"{count} pending request(s)", timeout)
        return self.pending

    async def answer(self, rule: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]], count: int = 1) -> None:
        """Wait for ``count`` pending requests and resolve each with ``rule(its inputs)``."""
        for entry in (await self.submitted(count))[:count]:
            entry.resolve(rule(entry.inputs))


@dataclass(eq=False)
class Batch:
    """One batch a real Batcher handed to its model, waiting for the test."""

    inputs: Mapping[str, np.ndarray]
    future: asyncio.Future[Mapping[str, Any]]
    rule: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]]

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def release(self, outputs: Mapping[str, Any] | None = None) -> None:
        """Let it finish: with these outputs, else what the model's rule computes."""
        self.future.set_result(outputs if outputs is not None else self.rule(self.inputs))

    def fail(self, error: BaseException) -> None:
        """Let it fail, as a model that raises."""
        self.future.set_exception(error)


class HeldBatches(_Watched):
    """A model for a real Batcher (its ``run_batch``) whose every batch waits until the test releases it:
    requests behind it queue for real, with the batcher's limits, deadlines and cancellation."""

    def __init__(self, rule: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]], name: str = "held") -> None:
        super().__init__(name)
        self.rule = rule
        self.batches: list[Batch] = []  # every batch run, in order
        self.holding = True

    @property
    def computing(self) -> list[Batch]:
        """Batches handed to the model and not yet released, oldest first."""
        return [batch for batch in self.batches if not batch.future.done()]

    def _waiting(self) -> int:
        return len(self.computing)

    async def run(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
        if not self.holding:
            return self.rule(inputs)
        batch = Batch({name: np.array(value) for name, value in inputs.items()},
                      asyncio.get_running_loop().create_future(), self.rule)
        self.batches.append(batch)
        self._notify()
        try:
            return await batch.future
        finally:
            self._notify()

    async def held(self, count: int = 1, timeout: float = WAIT) -> list[Batch]:
        """Wait until ``count`` batches are computing (held); return them, oldest first."""
        await self.until(lambda: len(self.computing) >= count, f"{count} batch(es) computing", timeout)
        return self.computing

    async def close(self) -> None:
        """Hold nothing more: every held batch is released, later ones run at once."""
        self.holding = False
        for batch in self.computing:
            batch.release()
