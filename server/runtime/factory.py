"""Pick the worker mode and backend for a model version from settings and its model.yaml."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from ..model_config import ModelConfig
from ..settings import Settings
from ..vocabulary import Signature
from .backend import Model
from .thread_pool import ThreadWorkerPool

log = logging.getLogger(__name__)


class WorkerPool(Protocol):
    """Runs batches on loaded model instances; the batcher's run_batch is ``run``."""

    mode: str
    instances: int

    @property
    def signature(self) -> Signature: ...

    @property
    def backend(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def batch_sizes(self) -> tuple[int, ...] | None: ...

    async def start(self) -> None: ...

    async def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...


def load_model(path: Path, config: ModelConfig, device: str) -> Model:
    """Load one instance of a version: TF-TRT when asked for and available, else TensorFlow."""
    from .tensorflow_model import TensorFlowModel

    if config.tensorrt is not None:
        from .tensorrt import load_tensorrt_model

        trt_model = load_tensorrt_model(path, config, device)
        if trt_model is not None:
            return trt_model
    return TensorFlowModel(path, config.signature_name, device)


def create_pool(path: Path, config: ModelConfig, settings: Settings) -> WorkerPool:
    """Thread workers in this process, or one worker process per device."""
    per_device = config.instances_per_device or settings.instances_per_device
    if settings.workers == "process":
        from .process_pool import ProcessWorkerPool

        return ProcessWorkerPool(path, config, settings, config.devices)
    from .tf_setup import configure_tensorflow, visible_devices

    configure_tensorflow(settings.tf_intra_op_threads, settings.tf_inter_op_threads, settings.gpu_memory_growth)
    devices = config.devices or visible_devices()
    placement = [devices[i % len(devices)] for i in range(per_device * len(devices))]
    return ThreadWorkerPool(lambda index: load_model(path, config, placement[index]), len(placement))
