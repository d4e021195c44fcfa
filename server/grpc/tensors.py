"""gRPC tensors ⇄ numpy: KServe V2 ``InferInputTensor`` (typed ``contents`` or ``raw_input_contents``)
and TensorFlow's ``TensorProto`` (``tensor_content`` or the typed ``*_val`` fields).

Raw bytes are read with ``np.frombuffer`` (one view, no per-element Python work); BYTES in raw form
are 4-byte little-endian lengths then the bytes (the V2 binary extension's layout, shared with
``server/codecs/v2_tensor.py``). Errors are CodecError with the same wording as the HTTP codecs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.codecs import CodecError
from server.codecs.v2 import check_parameters, schedule_parameters
from server.codecs.v2_tensor import decode_bytes_tensor, raw_bytes
from server.core.vocabulary import dtype_from_v2, tf_enum_name, v2_datatype
from server.grpc import protos

_OBJECT = np.dtype(object)

# KServe V2 datatype -> the InferTensorContents field that carries it (FP16 travels only as raw bytes).
_V2_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
# TensorFlow DataType name -> the TensorProto field that carries it (TF's tensor.proto comments).
_TF_FIELD = {
    "DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val", "DT_INT16": "int_val",
    "DT_INT8": "int_val", "DT_UINT8": "int_val", "DT_UINT16": "int_val", "DT_INT64": "int64_val",
    "DT_BOOL": "bool_val", "DT_STRING": "string_val", "DT_HALF": "half_val", "DT_UINT32": "uint32_val",
    "DT_UINT64": "uint64_val",
}

_V2_DTYPES = {datatype: dtype_from_v2(datatype) for datatype in (*_V2_FIELD, "FP16")}
# native-order numpy dtype -> V2 datatype, for the hot path of encoding outputs (v2_datatype decides the rest)
_V2_OF_DTYPE = {dtype: datatype for datatype, dtype in _V2_DTYPES.items()}
# V2 datatype -> (the little-endian dtype its raw bytes hold, item size) for the lean path: fixed-size types only
_RAW_FIXED = {datatype: (dtype.newbyteorder("<"), dtype.itemsize) for datatype, dtype in _V2_DTYPES.items()
              if dtype != _OBJECT}


def _shape(name: str, dims: Iterable[int]) -> tuple[int, ...]:
    shape = tuple(dims)
    if shape and min(shape) < 0:
        raise CodecError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {list(shape)}")
    return shape


def _from_raw(name: str, datatype: str, dtype: np.dtype, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    count = math.prod(shape)
    if dtype == _OBJECT:
        return decode_bytes_tensor(memoryview(raw), count, name).reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise CodecError(f"input {name!r}: shape {list(shape)} of {datatype} needs {count * dtype.itemsize} bytes, "
                         f"got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype if dtype.byteorder != ">" else dtype.newbyteorder("<")).reshape(shape)


def _from_values(name: str, values: Sequence[Any], dtype: np.dtype, shape: tuple[int, ...], what: str,
                 broadcast: bool = False) -> np.ndarray:
    count = math.prod(shape)
    if dtype == _OBJECT:
        arr = np.empty(len(values), dtype=object)
        arr[:] = list(values)
    else:
        try:
            arr = np.array(values, dtype=dtype)
        except (OverflowError, ValueError) as exc:
            raise CodecError(f"input {name!r}: {what} do not fit {dtype.name}: {exc}") from None
    if arr.size == count:
        return arr.reshape(shape)
    if broadcast and arr.size == 1:  # TensorProto: one value fills the tensor (tf.make_ndarray's rule)
        return np.full(shape, arr[0], dtype=arr.dtype)
    raise CodecError(f"input {name!r}: shape {list(shape)} needs {count} elements, {what} has {arr.size}")


# ---- KServe V2 -------------------------------------------------------------------------------------------

# ModelInferRequest's raw_input_contents: field 7, length-delimited (tag byte 0x3a)
_RAW_INPUT_FIELD = 7
# a request at least this large has its raw contents split off before upb parses it (see split_raw_contents)
SPLIT_FROM_BYTES = 32 * 1024


@dataclass(slots=True, eq=False)
class SplitRequest:
    """A ModelInferRequest parsed without its raw_input_contents (``message``) and those contents as views
    of the bytes gRPC received (``raw``): a large tensor is then never copied on its way to the batch
    (upb's parse and the ``raw_input_contents`` accessor would copy it once each)."""

    message: Any
    raw: list[memoryview]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def split_raw_contents(data: bytes) -> tuple[int, list[memoryview]] | None:
    """Where a serialized ModelInferRequest's raw_input_contents begin, and each as a view of ``data``, when
    they are its last fields (as protobuf serializers write them, in field order); None otherwise (the
    message is then parsed whole, and any damage in it is upb's to report)."""
    view = memoryview(data)
    size = len(data)
    pos = 0
    start = -1
    raw: list[memoryview] = []
    try:
        while pos < size:
            tag_at = pos
            tag, pos = _varint(data, pos)
            wire = tag & 7
            if wire == 2:
                length, pos = _varint(data, pos)
                end = pos + length
                if end > size:
                    return None
                if tag >> 3 == _RAW_INPUT_FIELD:
                    if start < 0:
                        start = tag_at
                    raw.append(view[pos:end])
                elif start >= 0:
                    return None
                pos = end
            elif start >= 0:
                return None
            elif wire == 0:
                pos = _varint(data, pos)[1]
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            else:
                return None
    except IndexError:
        return None
    if start < 0 or pos != size:
        return None
    return start, raw


def lean_inputs(request: Any, raw: Sequence[Any]) -> dict[str, np.ndarray] | None:
    """The inputs as views of ``raw`` when every one is raw and fixed-size, with a shape that fits its raw
    size and a name of its own (what tritonclient sends: one view each, few upb accesses); else None."""
    tensors = request.inputs
    count = len(raw)
    if not count or count != len(tensors):
        return None
    inputs: dict[str, np.ndarray] = {}
    for index in range(count):  # indexing: iterating upb containers costs more
        tensor = tensors[index]
        fixed = _RAW_FIXED.get(tensor.datatype)
        if fixed is None:
            return None
        shape = tensor.shape[:]  # a list (upb's slice), cheaper than tuple()
        name = tensor.name
        data = raw[index]
        if name in inputs or (shape and min(shape) < 0) or len(data) != math.prod(shape) * fixed[1]:
            return None
        inputs[name] = np.frombuffer(data, fixed[0]).reshape(shape)
    return inputs


def v2_inputs(request: Any, raw: Sequence[Any] | None = None) -> dict[str, np.ndarray]:
    """A ModelInferRequest's inputs; raw_input_contents (or ``raw``, a SplitRequest's), when present, holds
    one entry per input in order. What ``lean_inputs`` doubts goes through ``_v2_inputs``, which names errors."""
    if raw is None:
        raw = request.raw_input_contents
    inputs = lean_inputs(request, raw)
    return inputs if inputs is not None else _v2_inputs(request, raw)


def _v2_inputs(request: Any, raw: Sequence[Any]) -> dict[str, np.ndarray]:
    tensors = request.inputs
    if not tensors:
        raise CodecError("request needs a non-empty 'inputs' list")
    if raw and len(raw) != len(tensors):
        raise CodecError(f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs: give every input "
                         "as raw contents or none")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(tensors):
        name = tensor.name
        if name in inputs:
            raise CodecError(f"input {name!r} appears twice")
        try:
            dtype = dtype_from_v2(tensor.datatype).newbyteorder("<")
        except ValueError as exc:  # it names the datatypes accepted
            raise CodecError(f"input {name!r}: {exc}") from None
        shape = _shape(name, tensor.shape)
        if raw:
            inputs[name] = _from_raw(name, tensor.datatype, dtype, shape, raw[index])
            continue
        field = _V2_FIELD.get(tensor.datatype)
        if field is None:
            raise CodecError(f"input {name!r}: {tensor.datatype} has no typed contents; send it in raw_input_contents")
        inputs[name] = _from_values(name, getattr(tensor.contents, field), dtype, shape, f"contents.{field}")
    return inputs


def v2_schedule(parameters: Mapping[str, Any]) -> tuple[float | None, int]:
    """``schedule_parameters`` of the InferParameters scheduling reads (``timeout``, ``priority``), after
    ``check_parameters`` (Triton's that batchserve does not implement are refused; others are ignored)."""
    check_parameters("request", parameters)
    values: dict[str, Any] = {}
    for key in ("timeout", "priority"):
        if key in parameters:  # indexing a missing key would add it
            parameter = parameters[key]
            kind = parameter.WhichOneof("parameter_choice")
            if kind is not None:
                values[key] = getattr(parameter, kind)
    return schedule_parameters(values)


def v2_signature(parameters: Mapping[str, Any]) -> str | None:
    """``parameters.signature_name`` (a ``string_param``): the signature to run (None: the default)."""
    if "signature_name" not in parameters:
        return None
    parameter = parameters["signature_name"]
    kind = parameter.WhichOneof("parameter_choice")
    if kind is not None and kind != "string_param":
        raise CodecError(f"parameters.signature_name must be a string_param, got {kind}")
    return parameter.string_param or None


def v2_tensor_parameters(request: Any) -> None:
    """``check_parameters`` of each input's and requested output's parameters (none: one upb access each)."""
    for kind, tensors in (("input", request.inputs), ("output", request.outputs)):
        for tensor in tensors:
            if tensor.parameters:
                check_parameters(kind, tensor.parameters, tensor.name)


def v2_response(response: Any, outputs: Mapping[str, np.ndarray], names: Iterable[str], raw: bool) -> None:
    """Fill a ModelInferResponse's outputs: raw_output_contents when ``raw`` (Triton answers raw requests so),
    else typed contents (FP16 always raw)."""
    add = response.outputs.add
    for name in names:
        arr = outputs[name]
        dtype = arr.dtype
        datatype = _V2_OF_DTYPE.get(dtype) or v2_datatype(dtype)
        tensor = add(name=name, datatype=datatype, shape=arr.shape)
        if raw:
            # the common case without raw_bytes' checks: native little-endian numbers, one copy
            response.raw_output_contents.append(arr.tobytes() if dtype in _V2_OF_DTYPE and datatype != "BYTES"
                                                else raw_bytes(arr))
            continue
        field = _V2_FIELD.get(datatype)
        if field is None:
            raise CodecError(f"output {name!r} is {datatype}, which has no typed contents: send raw inputs to get "
                             "raw outputs")
        flat = arr.reshape(-1)
        getattr(tensor.contents, field).extend(list(flat) if arr.dtype == _OBJECT else flat.tolist())


# ---- TensorFlow TensorProto ------------------------------------------------------------------------------


def _tf_enum() -> Any:
    return protos.pool().FindEnumTypeByName("tensorflow.DataType")


@functools.cache
def _tf_tables() -> tuple[dict[int, np.dtype], dict[np.dtype, int]]:
    numpy_of = {_tf_enum().values_by_name[tf_enum_name(dtype)].number: dtype for dtype in _V2_DTYPES.values()}
    return numpy_of, {dtype: number for number, dtype in numpy_of.items()}


def tf_tensor(name: str, proto: Any) -> np.ndarray:
    """A TensorProto as an array: ``tensor_content`` (raw) or the typed field of its dtype."""
    numpy_of, _ = _tf_tables()
    dtype = numpy_of.get(proto.dtype)
    if dtype is None:
        value = _tf_enum().values_by_number.get(proto.dtype)
        raise CodecError(f"input {name!r}: dtype {value.name if value is not None else proto.dtype} is not "
                         f"supported; supported: {sorted(tf_enum_name(d) for d in numpy_of.values())}")
    if proto.tensor_shape.unknown_rank:
        raise CodecError(f"input {name!r}: tensor_shape has unknown rank")
    shape = _shape(name, (d.size for d in proto.tensor_shape.dim))
    enum_name = tf_enum_name(dtype)
    if proto.tensor_content and dtype != _OBJECT:
        return _from_raw(name, enum_name, dtype, shape, proto.tensor_content)
    field = _TF_FIELD[enum_name]
    values = getattr(proto, field)
    if dtype == np.dtype(np.float16):  # half_val holds the IEEE half bit patterns
        return _from_values(name, values, np.dtype(np.uint16), shape, field, broadcast=True).view(np.float16)
    return _from_values(name, values, dtype, shape, field, broadcast=True)


def fill_tf_tensor(proto: Any, arr: np.ndarray) -> None:
    """Write ``arr`` into a TensorProto with the typed ``*_val`` field, as TF Serving's Predict answers."""
    _, tf_of = _tf_tables()
    proto.dtype = tf_of[arr.dtype]
    proto.tensor_shape.dim.extend(protos.message("tensorflow.TensorShapeProto.Dim")(size=d) for d in arr.shape)
    flat = arr.reshape(-1)
    field = getattr(proto, _TF_FIELD[tf_enum_name(arr.dtype)])
    if arr.dtype == _OBJECT:
        field.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif arr.dtype == np.dtype(np.float16):
        field.extend(flat.view(np.uint16).tolist())
    else:
        field.extend(flat.tolist())


def v2_request(request: Any, inputs: Mapping[str, np.ndarray]) -> None:
    """Fill a ModelInferRequest's inputs as raw contents (what tritonclient sends, and the cheapest)."""
    for name, arr in inputs.items():
        request.inputs.add(name=name, datatype=v2_datatype(arr.dtype), shape=arr.shape)
        request.raw_input_contents.append(raw_bytes(arr))


def v2_outputs(response: Any) -> dict[str, np.ndarray]:
    """A ModelInferResponse's outputs as arrays, raw or typed."""
    raw = response.raw_output_contents
    outputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(response.outputs):
        dtype = dtype_from_v2(tensor.datatype)
        shape = tuple(tensor.shape)
        if raw:
            outputs[tensor.name] = _from_raw(tensor.name, tensor.datatype, dtype, shape, raw[index])
        else:
            field = _V2_FIELD[tensor.datatype]
            outputs[tensor.name] = _from_values(tensor.name, getattr(tensor.contents, field), dtype, shape, field)
    return outputs
