"""TF-TRT conversion (``batchserve convert tensorrt``, and ``optimization: tensorrt`` at load).

A SavedModel becomes a TF-TRT SavedModel with engines pre-built per batch size.

Dynamic shapes with the "Optimal" profile strategy give one optimisation profile
per shape that build() sees; build() runs exactly the batch sizes the batcher will
send, and runtime engine builds are switched off, so no request ever waits for
an engine build. The sizes are recorded next to the model (batchserve_trt.json)
and become the batcher's allowed_batch_sizes when it is served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from server.core.vocabulary import example_inputs
from server.runtime.tensorrt import MANIFEST, TensorRTUnavailable, tensorrt_status

log = logging.getLogger(__name__)
PRECISIONS = ("FP32", "FP16", "INT8")


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

