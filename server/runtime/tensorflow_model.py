"""The TensorFlow SavedModel backend: load, introspect the signature, run batches."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from server.core.vocabulary import Signature, TensorSpec
from server.runtime.backend import ModelLoadError, choose_signatures
from server.runtime.tf_call import SignatureCall


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
    """A SavedModel held in this process, placed on one device: every signature asked for, one load.

    ``signature_names`` empty: every signature of the SavedModel is served. ``default`` is the one a
    request without a signature name runs: TF Serving's ``serving_default`` where the model has it,
    else its only (or, alphabetically, first) served signature.
    """

    backend = "tensorflow"

    def __init__(self, path: str | Path, default: str | None = None, device: str = "/CPU:0",
                 batch_sizes: tuple[int, ...] | None = None, signature_names: tuple[str, ...] = ()) -> None:
        import tensorflow as tf

        self._tf = tf
        self.path = Path(path)
        self.device = device
        try:
            with tf.device(device):
                self._loaded = tf.saved_model.load(str(self.path))
        except Exception as exc:
            raise ModelLoadError(f"cannot load SavedModel at {self.path}: {_first_line(exc)}") from exc
        available = dict(self._loaded.signatures)
        names = choose_signatures(sorted(available), default, signature_names, f"SavedModel at {self.path}")
        self.signatures = {name: read_signature(available[name], name) for name in names}
        self._calls = {name: SignatureCall(available[name], list(self.signatures[name].inputs)) for name in names}
        self.signature = self.signatures[names[0]]
        self.batch_sizes = batch_sizes  # a TF-TRT model runs only the batch sizes its engines were built for
        if batch_sizes:
            self.backend = "tensorflow-trt"
        self._dtypes = {sig: {name: tf.string if spec.is_string else tf.as_dtype(spec.dtype)
                              for name, spec in signature.inputs.items()}
                        for sig, signature in self.signatures.items()}

    @property
    def flat_signatures(self) -> set[str]:
        """The signatures called without TensorFlow's per-call keyword binding (server/runtime/tf_call.py)."""
        return {name for name, call in self._calls.items() if call.flat}

    def run(self, inputs: Mapping[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        tf = self._tf
        name = signature or self.signature.name
        call, dtypes = self._calls[name], self._dtypes[name]
        with tf.device(self.device):
            outputs = call({key: tf.constant(inputs[key], dtype) for key, dtype in dtypes.items()})
        return {key: value.numpy() for key, value in outputs.items()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
