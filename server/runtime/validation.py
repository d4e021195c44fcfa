"""Check a request's tensors against the signature before they are queued.

Every message names the input, what the signature expects and what came.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .signature import Signature, TensorSpec


class InvalidInput(ValueError):
    """The request does not fit the model's signature (HTTP 400)."""


def _coerce(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    if spec.is_string:
        if arr.dtype == object or arr.dtype.kind in "SU":
            return arr.astype(object) if arr.dtype != object else arr
        raise InvalidInput(f"input {spec.name!r} expects strings (BYTES), got {arr.dtype}")
    if arr.dtype == spec.dtype:
        return arr
    got = "strings" if arr.dtype == object or arr.dtype.kind in "SU" else arr.dtype.name
    raise InvalidInput(f"input {spec.name!r} expects {spec.datatype} ({spec.dtype.name}), got {got}")


def validate_inputs(signature: Signature, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return the inputs converted to the signature's dtypes, or raise InvalidInput."""
    expected = signature.inputs
    missing = [n for n in expected if n not in inputs]
    if missing:
        raise InvalidInput(f"missing input {missing[0]!r}; the signature expects inputs {sorted(expected)}")
    unknown = [n for n in inputs if n not in expected]
    if unknown:
        raise InvalidInput(f"unknown input {unknown[0]!r}; the signature expects inputs {sorted(expected)}")
    result: dict[str, np.ndarray] = {}
    rows: int | None = None
    for name, spec in expected.items():
        arr = inputs[name]
        if arr.ndim != len(spec.shape):
            raise InvalidInput(
                f"input {name!r} expects shape {spec.shape_text()} (rank {len(spec.shape)}), "
                f"got shape {list(arr.shape)} (rank {arr.ndim})"
            )
        if arr.shape[0] == 0:
            raise InvalidInput(f"input {name!r} has an empty batch (0 rows)")
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if axis and want != -1 and want != got:
                raise InvalidInput(
                    f"input {name!r} expects shape {spec.shape_text()}, got {list(arr.shape)} "
                    f"(dimension {axis} must be {want})"
                )
        if rows is not None and arr.shape[0] != rows:
            raise InvalidInput(f"input {name!r} has {arr.shape[0]} rows, other inputs have {rows}")
        rows = arr.shape[0]
        result[name] = _coerce(spec, arr)
    return result
