"""The TensorFlow SavedModel backend: load, introspect the signature, run batches."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from server.core.vocabulary import Signature, TensorSpec
from server.runtime.backend import ModelLoadError


def _spec(name: str, tf_spec: Any) -> TensorSpec:
    dtype = np.dtype(object) if tf_spec.dtype.name == "string" else np.dtype(tf_spec.dtype.as_numpy_dtype)
    shape = tf_spec.shape
    dims = tuple(-1 if d is None else int(d) for d in shape.as_list()) if shape.rank is not None else (-1,)
    return TensorSpec(name, dtype, dims)


def read_signature(function: Any, name: str) -> Signature:
    """Input and output specs of a concrete serving function."""
    _, kwargs = function.structured_input_signature
    inputs = {key: _spec(key, spec) for key, spec in sorted(kwargs.items())}
    outputs = {key: _spec(key, spec) for key, spec in sorted(function.structured_outputs.items())}
    return Signature(name=name, inputs=inputs, outputs=outputs)


class TensorFlowModel:
    """A SavedModel signature held in this process, placed on one device."""

    backend = "tensorflow"

    def __init__(self, path: str | Path, signature_name: str = "serving_default", device: str = "/CPU:0",
                 batch_sizes: tuple[int, ...] | None = None) -> None:
        import tensorflow as tf

        self._tf = tf
        self.path = Path(path)
        self.device = device
        try:
            with tf.device(device):
                self._loaded = tf.saved_model.load(str(self.path))
        except Exception as exc:
            raise ModelLoadError(f"cannot load SavedModel at {self.path}: {_first_line(exc)}") from exc
        signatures = dict(self._loaded.signatures)
        if signature_name not in signatures:
            raise ModelLoadError(
                f"SavedModel at {self.path} has no signature {signature_name!r}; it has {sorted(signatures)}"
            )
        self._function = signatures[signature_name]
        self.signature = read_signature(self._function, signature_name)
        self.batch_sizes = batch_sizes  # a TF-TRT model runs only the batch sizes its engines were built for
        if batch_sizes:
            self.backend = "tensorflow-trt"
        self._dtypes = {name: tf.string if spec.is_string else tf.as_dtype(spec.dtype)
                        for name, spec in self.signature.inputs.items()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tf = self._tf
        with tf.device(self.device):
            outputs = self._function(**{name: tf.constant(inputs[name], dtype) for name, dtype in self._dtypes.items()})
        return {name: value.numpy() for name, value in outputs.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
