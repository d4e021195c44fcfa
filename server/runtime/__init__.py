"""Model backends and the worker pools that run their batches: the runtime's public surface.

Built from plain values (``ModelSpec``, ``WorkerSpec``); nothing here reads the
server's settings or model.yaml. TensorFlow is imported only when a TensorFlow
model loads, so synthetic models serve where TensorFlow is not installed.
"""

from server.runtime.backend import Model, ModelLoadError, WorkerCrashed, WorkerHung
from server.runtime.factory import WorkerPool, create_pool
from server.runtime.loading import load_model
from server.runtime.spec import ModelSpec, SyntheticSpec, TensorRTSpec, WorkerSpec
from server.runtime.tensorflow_model import TensorFlowModel
from server.runtime.tensorrt import TensorRTUnavailable, convert_tensorrt, tensorrt_status
from server.runtime.tf_setup import configure_tensorflow

__all__ = [
    "Model", "ModelLoadError", "ModelSpec", "SyntheticSpec", "TensorFlowModel", "TensorRTSpec", "TensorRTUnavailable",
    "WorkerCrashed", "WorkerHung", "WorkerPool", "WorkerSpec", "configure_tensorflow", "convert_tensorrt",
    "create_pool", "load_model", "tensorrt_status",
]
