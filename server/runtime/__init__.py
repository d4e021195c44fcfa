"""Model backends and the worker pools that run their batches: the runtime's public surface.

Built from plain values (``ModelSpec``, ``WorkerSpec``); nothing here reads the
server's settings or model.yaml. TensorFlow is imported only when a TensorFlow
model loads, so synthetic models serve where TensorFlow is not installed.
"""

from .backend import Model, ModelLoadError, WorkerCrashed
from .factory import WorkerPool, create_pool
from .loading import load_model
from .spec import ModelSpec, SyntheticSpec, TensorRTSpec, WorkerSpec
from .tensorrt import TensorRTUnavailable, tensorrt_status

__all__ = [
    "Model", "ModelLoadError", "ModelSpec", "SyntheticSpec", "TensorRTSpec", "TensorRTUnavailable", "WorkerCrashed",
    "WorkerPool", "WorkerSpec", "create_pool", "load_model", "tensorrt_status",
]
