"""A fake model and a recording observer for the batcher's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import numpy as np


async def settle(rounds: int = 50) -> None:
    """Let every ready task run until the loop is quiet (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def unexpected(outputs: object, error: BaseException | None) -> None:
    """The delivery of a request that enqueue must refuse: never called."""
    raise AssertionError(f"a refused request was delivered: {outputs!r}, {error!r}")


async def until(predicate: Callable[[], bool], rounds: int = 10_000) -> None:
    """Let ready tasks run until predicate holds (no time passes); fail if it never does."""
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("the awaited state never came")


class ParkingModel:
    """Doubles ``x``; each call parks on its own gate until released, and the peak of calls at once is kept."""

    def __init__(self) -> None:
        self.parked: list[asyncio.Future[None]] = []
        self.active = 0
        self.peak = 0
        self.calls = 0

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        gate = asyncio.get_running_loop().create_future()
        self.parked.append(gate)
        try:
            await gate
        finally:
            self.active -= 1
        return {"y": inputs["x"] * 2}

    def release(self, index: int) -> None:
        self.parked.pop(index).set_result(None)


class FakeModel:
    """Doubles ``x``; records every batch; can be held at a gate or told to fail."""

    def __init__(self, gated: bool = False) -> None:
        self.batches: list[dict[str, np.ndarray]] = []
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()
        self.fail_when: float | None = None  # a batch containing this x value raises
        self.wrong_rows = False

    async def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append(dict(inputs))
        await self.gate.wait()
        x = inputs["x"]
        if self.fail_when is not None and np.any(x == self.fail_when):
            raise RuntimeError("model failed on this batch")
        y = x * 2
        if self.wrong_rows:
            y = y[:-1]
        return {"y": y}

    @property
    def sizes(self) -> list[int]:
        return [b["x"].shape[0] for b in self.batches]


class RecordingObserver:
    def __init__(self) -> None:
        self.waits: list[float] = []
        self.formed: list[tuple[int, int]] = []
        self.computed: list[tuple[int, bool]] = []
        self.depths: list[int] = []
        self.inflight: list[int] = []
        self.rejections: list[tuple[str, int]] = []
        self.predicted: dict[int, float] = {}  # batch size -> the cost model's latest prediction
        self.lost: list[tuple[int, int]] = []
        self.rejected_requests: list[int] = []  # client requests counted by each rejection

    def queue_wait(self, seconds: float, requests: int = 1) -> None:
        self.waits.append(seconds)

    def batch_formed(self, rows: int, padding_rows: int) -> None:
        self.formed.append((rows, padding_rows))

    def batch_computed(self, seconds: float, rows: int, ok: bool) -> None:
        self.computed.append((rows, ok))

    def batch_lost(self, rows: int, attempt: int) -> None:
        self.lost.append((rows, attempt))

    def queue_depth(self, rows: int) -> None:
        self.depths.append(rows)

    def inflight_batches(self, batches: int) -> None:
        self.inflight.append(batches)

    def rejected(self, reason: str, rows: int, requests: int = 1) -> None:
        self.rejections.append((reason, rows))
        self.rejected_requests.append(requests)

    def predicted_compute(self, batch_size: int, seconds: float) -> None:
        self.predicted[batch_size] = seconds


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}
