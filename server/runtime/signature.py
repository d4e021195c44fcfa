"""A model's signature in numpy terms, and the dtype names each protocol uses for it."""

from __future__ import annotations

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
