"""Model backends and the worker pools that run their batches: the runtime's public surface.

Built from plain values (``ModelSpec``, ``WorkerSpec``); nothing here reads the
server's settings or model.yaml. TensorFlow is imported only when a TensorFlow
model loads, so synthetic models serve where TensorFlow is not installed.
"""

from .backend import Model, ModelLoadError, WorkerCrashed, WorkerHung
from .factory import WorkerPool, create_pool
from .loading import load_model
from .spec import ModelSpec, SyntheticSpec, TensorRTSpec, WorkerSpec
from .tensorflow_model import TensorFlowModel
from .tensorrt import TensorRTUnavailable, tensorrt_status
from .tensorrt_build import convert_tensorrt
from .tf_setup import configure_tensorflow

__all__ = [
    "Model", "ModelLoadError", "ModelSpec", "SyntheticSpec", "TensorFlowModel", "TensorRTSpec", "TensorRTUnavailable",
    "WorkerCrashed", "WorkerHung", "WorkerPool", "WorkerSpec", "configure_tensorflow", "convert_tensorrt",
    "create_pool", "load_model", "tensorrt_status",
]
