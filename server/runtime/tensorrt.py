"""TF-TRT: is TensorRT usable in this process, conversion (``batchserve convert tensorrt``, and
``optimization: tensorrt`` at load), and the record a conversion leaves next to a model.

In a TensorFlow without TensorRT, touching the TensorRT library before asking
``is_tensorrt_enabled()`` can abort the whole process, so every path asks first.
TensorFlow 2.17 is the last release with TF-TRT; the GPU image (Dockerfile.gpu,
NVIDIA's tensorflow:25.02-tf2-py3) has it.

A SavedModel becomes a TF-TRT SavedModel with engines pre-built per batch size.
Dynamic shapes with the "Optimal" profile strategy give one optimisation profile
per shape that build() sees; build() runs exactly the batch sizes the batcher will
send, and runtime engine builds are switched off, so no request ever waits for
an engine build. The sizes are recorded next to the model (batchserve_trt.json)
and become the batcher's allowed_batch_sizes when it is served.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from server.core.vocabulary import example_inputs

log = logging.getLogger(__name__)
MANIFEST = "batchserve_trt.json"  # written next to a converted SavedModel: precision, batch sizes, versions
PRECISIONS = ("FP32", "FP16", "INT8")
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


def _calibration_batches(path: Path, signature: Any) -> Iterator[list[np.ndarray]]:
    """INT8 calibration data: an .npz with one array per input name, rows on axis 0, fed 32 rows at a time."""
    data = np.load(path)
    missing = sorted(set(signature.inputs) - set(data.files))
    if missing:
        raise ValueError(f"calibration data {path} lacks inputs {missing}; it has {sorted(data.files)}")
    rows = data[sorted(signature.inputs)[0]].shape[0]
    for start in range(0, rows, 32):
        yield [data[name][start : start + 32] for name in sorted(signature.inputs)]


def convert_tensorrt(source: Path | str, target: Path | str, precision: str = "FP16",
                     batch_sizes: list[int] | None = None, calibration_data: Path | str | None = None,
                     signature_name: str = "serving_default", progress: bool = True) -> dict[str, Any]:
    """Convert, build one engine per batch size, save; returns the manifest written next to the model."""
    precision = precision.upper()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "INT8" and calibration_data is None:
        raise ValueError("INT8 needs --calibration-data FILE.npz (one array per input, a few hundred rows)")
    sizes = sorted(set(batch_sizes or [1, 2, 4, 8, 16, 32]))
    status = tensorrt_status()
    if not status.available:
        raise TensorRTUnavailable(f"cannot convert with TF-TRT: {status.reason}")
    import tensorflow as tf
    from tensorflow.python.compiler.tensorrt import trt_convert as trt
    from tqdm import tqdm

    from server.runtime.tensorflow_model import read_signature

    source, target = Path(source), Path(target)
    signature = read_signature(tf.saved_model.load(str(source)).signatures[signature_name], signature_name)
    params = trt.TrtConversionParams(
        precision_mode=precision, max_workspace_size_bytes=1 << 30, maximum_cached_engines=len(sizes),
        use_calibration=precision == "INT8", allow_build_at_runtime=False,
    )
    converter = trt.TrtGraphConverterV2(
        input_saved_model_dir=str(source), input_saved_model_signature_key=signature_name,
        use_dynamic_shape=True, dynamic_shape_profile_strategy="Optimal", conversion_params=params,
    )
    if precision == "INT8":
        assert calibration_data is not None
        converter.convert(calibration_input_fn=lambda: _calibration_batches(Path(calibration_data), signature))
    else:
        converter.convert()
    rng = np.random.default_rng(0)

    def build_inputs() -> Iterator[list[np.ndarray]]:
        for size in tqdm(sizes, desc="building TensorRT engines", unit="engine", disable=not progress):
            batch = example_inputs(signature, size, rng)
            yield [batch[name] for name in sorted(signature.inputs)]

    converter.build(input_fn=build_inputs)
    converter.save(str(target))
    manifest = {"precision": precision, "batch_sizes": sizes, "tensorflow": status.tensorflow,
                "tensorrt": status.loaded, "gpu": status.gpus[0] if status.gpus else "", "source": str(source)}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log.info("TF-TRT model written to %s (%s, engines for batch sizes %s)", target, precision, sizes)
    return manifest

