"""Direct SavedModel calls: what the server's answers must equal."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np


@cache
def _signature(path: str, name: str):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    return tf.saved_model.load(path).signatures[name]


def direct(path: Path, signature: str = "serving_default", **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """What ``signature`` of the SavedModel at ``path`` answers for ``inputs``, called in this process."""
    import tensorflow as tf

    outputs = _signature(str(path), signature)(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}
