"""Process-wide TensorFlow settings, applied once before any model loads.

TensorFlow's default pools on two cores make batch-1 calls about twice as
slow as one pinned thread, so the thread counts are set deliberately.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
_configured = False


def configure_tensorflow(intra_op_threads: int = 0, inter_op_threads: int = 0, gpu_memory_growth: bool = True) -> None:
    """Set TF thread pools and GPU memory growth; safe to call more than once (first call wins)."""
    global _configured
    if _configured:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        if intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
        if inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op_threads)
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, gpu_memory_growth)
    except RuntimeError as exc:  # TensorFlow already initialised its runtime in this process
        log.warning("TensorFlow settings not applied: %s", exc)
    _configured = True


def visible_devices() -> list[str]:
    """TensorFlow device names to place model instances on: every GPU, else the CPU."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")] or ["/CPU:0"]
