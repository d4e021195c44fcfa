"""Direct SavedModel calls: what the server's answers must equal."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np


@cache
def _signature(path: str):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    return tf.saved_model.load(path).signatures["serving_default"]


def direct(path: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    outputs = _signature(str(path))(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}
