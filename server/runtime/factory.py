"""Build the worker pool for a model version from plain values (spec.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from server.core.vocabulary import Signature
from server.runtime.loading import load_model
from server.runtime.process_pool import ProcessWorkerPool
from server.runtime.spec import ModelSpec, WorkerSpec
from server.runtime.thread_pool import ThreadWorkerPool
from server.runtime.warmup_data import WarmupResult
from server.runtime.worker_home import WorkerHome


class WorkerPool(Protocol):
    """Runs batches on loaded model instances; each served signature's batcher runs ``run`` for it.

    A batcher's ``max_inflight_batches`` (= ``instances``) bounds its batches in flight: with one
    signature a pool is never sent more concurrent batches than it has instances; the batchers of
    several signatures share the instances (a batch waits in ``run`` for a free one).
    """

    mode: str
    instances: int
    backend: str
    device: str
    batch_sizes: tuple[int, ...] | None
    on_worker_restart: Callable[[str], None] | None  # told why a worker is replaced: crash | hang | rss

    @property
    def signature(self) -> Signature: ...  # the default

    @property
    def signatures(self) -> dict[str, Signature]: ...  # every one served, the default first

    async def start(self) -> None: ...

    async def warm_up(self, sizes: Sequence[int]) -> WarmupResult: ...

    async def run(self, inputs: dict[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...


def create_pool(model: ModelSpec, workers: WorkerSpec, home: WorkerHome | None = None) -> WorkerPool:
    """``instances_per_device`` instances on every device: threads in this process, or worker processes (which
    outlive this process in ``home``, and are adopted from there)."""
    if workers.mode == "process":
        return ProcessWorkerPool(model, workers, home)
    devices: Sequence[str] = workers.devices or ("/CPU:0",)
    if model.needs_tensorflow:
        from server.runtime.tf_setup import configure_tensorflow, visible_devices

        configure_tensorflow(workers.tf_intra_op_threads, workers.tf_inter_op_threads, workers.gpu_memory_growth)
        devices = workers.devices or tuple(visible_devices())
    placement = [devices[i % len(devices)] for i in range(workers.instances_per_device * len(devices))]
    return ThreadWorkerPool(lambda index: load_model(model, placement[index]), len(placement),
                            workers.batch_timeout_s, model.path.parent.name, model.warmup)
