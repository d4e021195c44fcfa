"""The shared vocabulary: signatures in numpy terms, each protocol's dtype names, input validation.

numpy only, so the codecs, the client, the runtime and the load generator can
all speak it without depending on one another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# numpy dtype -> (KServe V2 datatype, TensorFlow DataType enum name)
_DTYPES: dict[np.dtype, tuple[str, str]] = {
    np.dtype(np.bool_): ("BOOL", "DT_BOOL"),
    np.dtype(np.uint8): ("UINT8", "DT_UINT8"),
    np.dtype(np.uint16): ("UINT16", "DT_UINT16"),
    np.dtype(np.uint32): ("UINT32", "DT_UINT32"),
    np.dtype(np.uint64): ("UINT64", "DT_UINT64"),
    np.dtype(np.int8): ("INT8", "DT_INT8"),
    np.dtype(np.int16): ("INT16", "DT_INT16"),
    np.dtype(np.int32): ("INT32", "DT_INT32"),
    np.dtype(np.int64): ("INT64", "DT_INT64"),
    np.dtype(np.float16): ("FP16", "DT_HALF"),
    np.dtype(np.float32): ("FP32", "DT_FLOAT"),
    np.dtype(np.float64): ("FP64", "DT_DOUBLE"),
    np.dtype(object): ("BYTES", "DT_STRING"),
}
_FROM_V2 = {v2: dt for dt, (v2, _) in _DTYPES.items()}


def v2_datatype(dtype: np.dtype) -> str:
    try:
        return _DTYPES[np.dtype(dtype)][0]
    except KeyError:
        raise ValueError(f"dtype {dtype} has no KServe V2 datatype") from None


def dtype_from_v2(datatype: str) -> np.dtype:
    """The numpy dtype of a V2 datatype name; ValueError names the ones accepted."""
    try:
        return _FROM_V2[datatype]
    except KeyError:
        raise ValueError(f"unknown datatype {datatype!r}; expected one of {sorted(_FROM_V2)}") from None


def tf_enum_name(dtype: np.dtype) -> str:
    return _DTYPES[np.dtype(dtype)][1]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: numpy dtype (object for strings) and shape, -1 where dynamic."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)

    @property
    def datatype(self) -> str:
        return v2_datatype(self.dtype)

    def shape_text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.shape) + "]"


@dataclass(frozen=True)
class Signature:
    """The serving signature a model version exposes."""

    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    method_name: str = "tensorflow/serving/predict"


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
            raise InvalidInput(f"input {name!r} expects shape {spec.shape_text()} (rank {len(spec.shape)}), "
                               f"got shape {list(arr.shape)} (rank {arr.ndim})")
        if arr.shape[0] == 0:
            raise InvalidInput(f"input {name!r} has an empty batch (0 rows)")
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if axis and want != -1 and want != got:
                raise InvalidInput(f"input {name!r} expects shape {spec.shape_text()}, got {list(arr.shape)} "
                                   f"(dimension {axis} must be {want})")
        if rows is not None and arr.shape[0] != rows:
            raise InvalidInput(f"input {name!r} has {arr.shape[0]} rows, other inputs have {rows}")
        rows = arr.shape[0]
        result[name] = _coerce(spec, arr)
    return result


def example_inputs(signature: Signature, batch_size: int, rng: np.random.Generator | None = None
                   ) -> dict[str, np.ndarray]:
    """Inputs of ``batch_size`` rows that fit the signature: for warm-up (zeros, empty strings) and,
    with ``rng``, for building TensorRT engines (random floats). Dynamic dimensions are 1."""
    inputs: dict[str, np.ndarray] = {}
    for name, spec in signature.inputs.items():
        shape = (batch_size, *(1 if d == -1 else d for d in spec.shape[1:]))
        if spec.is_string:
            arr = np.empty(shape, dtype=object)
            arr.fill(b"")
        elif rng is not None and spec.dtype.kind == "f":
            arr = rng.random(shape).astype(spec.dtype)
        else:
            arr = np.zeros(shape, dtype=spec.dtype)
        inputs[name] = arr
    return inputs
