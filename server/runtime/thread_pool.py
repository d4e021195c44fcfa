"""Thread workers: model instances in the server process, each computing on its own thread.

TensorFlow releases the GIL while it computes, so the event loop stays free;
a batch goes to whichever instance is idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..vocabulary import Signature
from .backend import Model

log = logging.getLogger(__name__)


class ThreadWorkerPool:
    """``instances`` copies of a model, one single-thread executor each."""

    mode = "thread"

    def __init__(self, load_model: Callable[[int], Model], instances: int = 1) -> None:
        self._load_model = load_model
        self.instances = instances
        self._models: list[Model] = []
        self._executors: list[ThreadPoolExecutor] = []
        self._idle: asyncio.Queue[int] = asyncio.Queue()
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
            self._idle.put_nowait(index)

    async def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = await self._idle.get()
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executors[index], self._models[index].run, inputs)
        finally:
            self._idle.put_nowait(index)

    async def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
        self._models.clear()
        self._executors.clear()
