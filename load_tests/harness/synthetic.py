"""The synthetic models the front-end benchmarks serve: the demo models' signatures, no TensorFlow, and a
model that sleeps as a GPU would (``base_ms + per_row_ms * rows`` a batch; the H200's timings by default).

The request bodies are the demo models' (``load_tests/harness/payloads.py``): one 96x96x3 image as float32
(a 110,741-byte V2 binary body), as uint8 pixels (27,648 bytes of tensor) or as JPEG bytes (a few KB),
and a tabular row of 32 float32 (128 bytes of tensor).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

H200_BASE_MS, H200_PER_ROW_MS = 0.52, 0.0077  # MobileNetV2-96 on an H200, per batch and per row
MAX_BATCH_SIZE, MAX_QUEUE_DELAY_MS = 128, 2


@dataclass(frozen=True)
class Synthetic:
    """One synthetic model's signature: one input and one output, ``shape`` per row."""

    input: str
    datatype: str
    shape: tuple[int, ...]
    output: str
    output_shape: tuple[int, ...]


MODELS = {
    "image_classifier": Synthetic("image", "FP32", (96, 96, 3), "probabilities", (10,)),
    "image_uint8": Synthetic("image", "UINT8", (96, 96, 3), "probabilities", (10,)),
    "image_jpeg": Synthetic("image_bytes", "BYTES", (), "probabilities", (10,)),
    "tabular": Synthetic("features", "FP32", (32,), "score", (1,)),
}


def write_repository(root: Path, base_ms: float = H200_BASE_MS, per_row_ms: float = H200_PER_ROW_MS) -> Path:
    """Every model of MODELS as a synthetic model.yaml under ``root`` (max batch 128, delay 2 ms)."""
    for name, model in MODELS.items():
        (root / name / "1").mkdir(parents=True, exist_ok=True)
        config = {"backend": "synthetic", "max_batch_size": MAX_BATCH_SIZE, "max_queue_delay_ms": MAX_QUEUE_DELAY_MS,
                  "signature": {"inputs": {model.input: {"datatype": model.datatype, "shape": [-1, *model.shape]}},
                                "outputs": {model.output: {"datatype": "FP32", "shape": [-1, *model.output_shape]}}},
                  "synthetic": {"base_ms": base_ms, "per_row_ms": per_row_ms}}
        (root / name / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root
