"""Thread workers: model instances in the server process, each computing on its own thread.

TensorFlow releases the GIL while it computes, so the event loop stays free;
a batch goes to whichever instance is free. The batcher sends at most
``instances`` batches at once, so a free instance always exists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..vocabulary import Signature, example_inputs
from .backend import Model


class ThreadWorkerPool:
    """``instances`` copies of a model, one single-thread executor each."""

    mode = "thread"

    def __init__(self, load_model: Callable[[int], Model], instances: int = 1) -> None:
        self._load_model = load_model
        self.instances = instances
        self._models: list[Model] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._free: list[int] = []
        self._first: Model  # kept after close(), so a retired version still describes itself

    @property
    def signature(self) -> Signature:
        return self._first.signature

    @property
    def backend(self) -> str:
        return self._first.backend

    @property
    def device(self) -> str:
        return self._first.device

    @property
    def batch_sizes(self) -> tuple[int, ...] | None:
        """The only batch sizes the model can run (TF-TRT engines), or None for any."""
        return getattr(self._first, "batch_sizes", None)

    async def start(self) -> None:
        """Load every instance (on worker threads, so the event loop keeps serving)."""
        for index in range(self.instances):
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{index}")
            self._executors.append(executor)
            loop = asyncio.get_running_loop()
            self._models.append(await loop.run_in_executor(executor, self._load_model, index))
            self._first = self._models[0]
            self._free.append(index)

    async def warm_up(self, sizes: Sequence[int]) -> None:
        """Run every size on every instance, so tracing happens before traffic."""
        loop = asyncio.get_running_loop()
        for size in sizes:
            inputs = example_inputs(self.signature, size)
            for executor, model in zip(self._executors, self._models):
                await loop.run_in_executor(executor, model.run, inputs)

    async def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._free:
            raise RuntimeError(f"all {self.instances} instances are busy: the batcher sent more batches than "
                               "max_inflight_batches allows")
        index = self._free.pop()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executors[index], self._models[index].run, inputs)
        finally:
            self._free.append(index)

    async def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self._models.clear()
        self._executors.clear()
