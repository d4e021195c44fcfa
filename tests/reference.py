"""Direct SavedModel calls: what the server's answers must equal."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import numpy as np


@cache
def _signature(path: str, name: str):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    return tf.saved_model.load(path).signatures[name]


def direct(path: Path, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    return call_signature(path, "serving_default", inputs)


def call_signature(path: Path, signature: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The SavedModel at ``path`` called in this process through ``signature``, on exactly ``inputs``."""
    import tensorflow as tf

    outputs = _signature(str(path), signature)(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}
