"""Thread workers: model instances in the server process, each computing on its own thread.

TensorFlow releases the GIL while it computes, so the event loop stays free;
a batch goes to whichever instance is free. The batcher sends at most
``instances`` batches at once, so a free instance always exists.

A thread cannot be killed: a batch that overruns its time limit is logged as a
warning, and its instance stays busy until the model returns. Models that can
hang belong in process workers, whose watchdog kills and restarts them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from batching import TimedOutputs
from server.core.vocabulary import Signature
from server.observability.trace_context import BATCH
from server.observability.tracing import computed
from server.runtime.backend import Model, batch_timeout
from server.runtime.instance_thread import InstanceThread
from server.runtime.spec import WarmupSource
from server.runtime.warmup_data import WarmupBatch, WarmupResult, replay, warmup_batches

log = logging.getLogger(__name__)


class ThreadWorkerPool:
    """``instances`` copies of a model, one thread each (server/runtime/instance_thread.py). The first
    instance's description, set at start, is the pool's, kept after close() so a retired version still
    describes itself."""

    mode = "thread"
    signature: Signature  # the default
    signatures: dict[str, Signature]  # every one served, the default first
    backend: str
    device: str
    batch_sizes: tuple[int, ...] | None

    def __init__(self, load_model: Callable[[int], Model], instances: int = 1,
                 batch_timeout_s: float | None = None, name: str = "", warmup: WarmupSource | None = None) -> None:
        self._load_model = load_model
        self._warmup_source = warmup or WarmupSource()
        self.instances = instances
        self.name = name
        self._batch_timeout_s = batch_timeout_s
        self._slowest_warmup: float | None = None
        self.on_worker_restart: Callable[[str], None] | None = None  # threads never restart
        self._models: list[Model] = []
        self._executors: list[InstanceThread] = []
        self._free: list[int] = []
        self._freed: asyncio.Event | None = None  # set when an instance comes free (batchers share the instances)

    async def start(self) -> None:
        """Load every instance (on worker threads, so the event loop keeps serving)."""
        for index in range(self.instances):
            executor = InstanceThread(f"model-{index}")
            self._executors.append(executor)
            self._models.append(await asyncio.get_running_loop().run_in_executor(executor, self._load_model, index))
            self._free.append(index)
        first = self._models[0]
        self.signature, self.signatures, self.backend = first.signature, first.signatures, first.backend
        self.device = ",".join(dict.fromkeys(model.device for model in self._models))  # each device once
        self.batch_sizes = first.batch_sizes

    async def warm_up(self, sizes: Sequence[int]) -> WarmupResult:
        """Run every warm-up batch (server/runtime/warmup_data.py) on every instance, so tracing happens
        before traffic."""
        loop = asyncio.get_running_loop()
        batches = await asyncio.to_thread(warmup_batches, self._warmup_source, self.signatures, sizes,
                                          self.signature.name)

        async def on_every_instance(batch: WarmupBatch) -> None:
            for executor, model in zip(self._executors, self._models):
                started = time.perf_counter()
                await loop.run_in_executor(executor, model.run, batch.inputs, batch.signature)
                self._slowest_warmup = max(self._slowest_warmup or 0.0, time.perf_counter() - started)

        return await replay(batches, on_every_instance, self.name)

    def _overran(self, index: int, limit: float) -> None:
        log.warning("a batch of %s on thread instance %d has run longer than %.1f s (batch_timeout_ms); thread "
                    "workers cannot be killed, so the instance stays busy until the model returns (use process "
                    "workers for models that can hang)", self.name or "a model", index, limit)

    async def run(self, inputs: Mapping[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        """Run a batch of ``signature`` (None: the default) on a free instance. Each signature's batcher sends
        at most ``instances`` batches, so with one signature an instance is always free; the batchers of
        several signatures share the instances, and a batch may wait here for one."""
        while not self._free:
            if self._freed is None:
                self._freed = asyncio.Event()
            self._freed.clear()
            await self._freed.wait()
        index = self._free.pop()
        loop = asyncio.get_running_loop()
        limit = batch_timeout(self._batch_timeout_s, self._slowest_warmup)
        watchdog = loop.call_later(limit, self._overran, index, limit)
        try:
            return await self._executors[index].call(loop, _timed_run, self._models[index], inputs, signature,
                                                     BATCH.get())
        finally:
            watchdog.cancel()
            self._free.append(index)
            if self._freed is not None:
                self._freed.set()

    async def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self._models.clear()
        self._executors.clear()


def _timed_run(model: Model, inputs: Mapping[str, np.ndarray], signature: str | None,
               traced: str | None = None) -> TimedOutputs:
    """Run a batch on the model's own thread, timed there (the cost model learns the model's time); a traced
    batch's (``traced``: its span) run is its compute span."""
    started = time.perf_counter()
    outputs = model.run(inputs, signature)
    seconds = time.perf_counter() - started
    if traced is not None:
        computed(traced, seconds, inputs)
    return TimedOutputs(outputs, seconds)
