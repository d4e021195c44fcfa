"""TF-TRT facts: is TensorRT usable in this process, and the record a conversion leaves next to a model.

In a TensorFlow without TensorRT, touching the TensorRT library before asking
``is_tensorrt_enabled()`` can abort the whole process, so every path asks first.
TensorFlow 2.17 is the last release with TF-TRT; the GPU image (Dockerfile.gpu,
NVIDIA's tensorflow:25.02-tf2-py3) has it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "batchserve_trt.json"  # written next to a converted SavedModel: precision, batch sizes, versions
GPU_IMAGE_HINT = "use the GPU image (Dockerfile.gpu, NVIDIA TensorFlow 25.02 with TF 2.17) — see docs/gpu.md"


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot be used in this process; the message says what is missing."""


@dataclass(frozen=True)
class TensorRTStatus:
    available: bool
    reason: str
    tensorflow: str
    linked: str = ""
    loaded: str = ""
    gpus: tuple[str, ...] = ()


def tensorrt_status() -> TensorRTStatus:
    """What this process has: TensorFlow with TF-TRT compiled in, a loadable TensorRT, and GPUs."""
    import tensorflow as tf

    version = tf.__version__
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils as trt_utils
    except ImportError:
        return TensorRTStatus(False, f"TensorFlow {version} has no TF-TRT module; {GPU_IMAGE_HINT}", version)
    if not trt_utils.is_tensorrt_enabled():  # ask before touching the library
        return TensorRTStatus(False, f"TensorFlow {version} was built without TensorRT (TF-TRT was removed "
                                     f"from TensorFlow 2.18+); {GPU_IMAGE_HINT}", version)
    linked = ".".join(map(str, trt_utils.get_linked_tensorrt_version()))
    loaded = ".".join(map(str, trt_utils.get_loaded_tensorrt_version()))
    if loaded in ("", "0.0.0"):
        return TensorRTStatus(False, f"the TensorRT {linked} libraries cannot be loaded (libnvinfer missing); "
                                     f"{GPU_IMAGE_HINT}", version, linked, loaded)
    gpus = tuple(tf.config.experimental.get_device_details(g).get("device_name", g.name)
                 for g in tf.config.list_physical_devices("GPU"))
    if not gpus:
        return TensorRTStatus(False, "no GPU is visible to TensorFlow (check CUDA_VISIBLE_DEVICES and the "
                                     "NVIDIA container runtime)", version, linked, loaded)
    return TensorRTStatus(True, "TensorRT is available", version, linked, loaded, gpus)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The conversion record next to a TF-TRT SavedModel, if this is one."""
    manifest = path / MANIFEST
    return json.loads(manifest.read_text()) if manifest.exists() else None


def cache_key(source: Path, status: TensorRTStatus, precision: str, batch_sizes: tuple[int, ...]) -> str:
    """Engines are only valid for the GPU model, TensorRT, TensorFlow, precision and sizes they were built with."""
    pb = source / "saved_model.pb"
    stamp = f"{pb.stat().st_size}-{pb.stat().st_mtime_ns}" if pb.exists() else ""
    text = json.dumps([str(source.resolve()), stamp, status.gpus[:1], status.loaded, status.tensorflow, precision,
                       sorted(batch_sizes)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]
