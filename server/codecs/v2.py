"""KServe V2 inference bodies ⇄ numpy, in JSON and with the binary tensor extension.

Binary extension: the JSON header is the first ``Inference-Header-Content-Length``
bytes; each input with ``parameters.binary_data_size`` takes that many bytes of
the rest, in order. BYTES elements are a 4-byte little-endian length, then the bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..vocabulary import dtype_from_v2, v2_datatype
from .errors import CodecError
from .jsonio import dumps, loads

HEADER_LENGTH = "inference-header-content-length"


@dataclass
class V2Request:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None  # None: every output
    binary_outputs: set[str] = field(default_factory=set)


def _shape(spec: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CodecError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return tuple(shape)


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise CodecError(f"BYTES elements must be strings, got {type(value).__name__}")


def _flatten(data: Any) -> list[Any]:
    out: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            out.append(item)
    return out


def decode_bytes_tensor(raw: memoryview, count: int, name: str) -> np.ndarray:
    """Length-prefixed elements of a binary BYTES tensor."""
    items = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise CodecError(f"input {name!r}: binary BYTES data ends before element {i}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise CodecError(f"input {name!r}: binary BYTES element {i} runs past the data")
        items[i] = bytes(raw[offset : offset + length])
        offset += length
    if offset != len(raw):
        raise CodecError(f"input {name!r}: {len(raw) - offset} bytes left over after {count} BYTES elements")
    return items


def encode_bytes_tensor(arr: np.ndarray) -> bytes:
    parts = []
    for item in arr.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _json_data(spec: Mapping[str, Any], name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    data = spec.get("data")
    if data is None:
        raise CodecError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    if dtype == np.dtype(object):
        flat = _flatten(data) if isinstance(data, list) else [data]
        arr = np.empty(len(flat), dtype=object)
        arr[:] = [_to_bytes(v) for v in flat]
    else:
        try:
            arr = np.asarray(data, dtype=dtype)
        except (ValueError, TypeError) as exc:
            raise CodecError(f"input {name!r}: data is not a regular array of {v2_datatype(dtype)}: {exc}") from None
    count = math.prod(shape)
    if arr.size != count:
        raise CodecError(f"input {name!r}: shape {list(shape)} needs {count} elements, data has {arr.size}")
    return arr.reshape(shape)


def decode_request(body: bytes, header_length: int | None = None) -> V2Request:
    """Parse an infer body (JSON, or JSON header plus binary tensors)."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise CodecError(f"Inference-Header-Content-Length {header_length} does not fit a {len(body)}-byte body")
        document, binary = loads(body[:header_length]), memoryview(body)[header_length:]
    else:
        document, binary = loads(body), memoryview(b"")
    if not isinstance(document, dict):
        raise CodecError("request body must be a JSON object")
    specs = document.get("inputs")
    if not isinstance(specs, list) or not specs:
        raise CodecError("request needs a non-empty 'inputs' list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise CodecError("each input needs a 'name'")
        name = spec["name"]
        if name in inputs:
            raise CodecError(f"input {name!r} appears twice")
        shape = _shape(spec, name)
        try:
            dtype = dtype_from_v2(spec.get("datatype", ""))
        except ValueError as exc:
            raise CodecError(f"input {name!r}: {exc}") from None
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise CodecError(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
            raw = binary[offset : offset + size]
            offset += size
            if dtype == np.dtype(object):
                arr = decode_bytes_tensor(raw, math.prod(shape), name)
            else:
                if size != math.prod(shape) * dtype.itemsize:
                    raise CodecError(
                        f"input {name!r}: shape {list(shape)} of {spec['datatype']} needs "
                        f"{math.prod(shape) * dtype.itemsize} bytes, binary_data_size is {size}"
                    )
                arr = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
            inputs[name] = arr.reshape(shape)
        else:
            inputs[name] = _json_data(spec, name, dtype, shape)
    if offset != len(binary):
        raise CodecError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise CodecError("'parameters' must be an object")
    request = V2Request(inputs=inputs, id=document.get("id"), parameters=parameters)
    wanted = document.get("outputs")
    binary_default = bool(parameters.get("binary_data_output", False))
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and "name" in o for o in wanted):
            raise CodecError("'outputs' must be a list of objects with a 'name'")
        request.outputs = [o["name"] for o in wanted]
        for o in wanted:
            if (o.get("parameters") or {}).get("binary_data", binary_default):
                request.binary_outputs.add(o["name"])
    elif binary_default:
        request.binary_outputs = {"*"}
    return request


def encode_response(model: str, version: str, outputs: Mapping[str, np.ndarray], request: V2Request
                    ) -> tuple[bytes, int | None]:
    """The infer response body, and the JSON header's length when binary outputs follow it."""
    names = request.outputs if request.outputs is not None else list(outputs)
    entries = []
    inline: list[np.ndarray] = []
    chunks: list[bytes] = []
    for name in names:
        arr = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
        if name in request.binary_outputs or "*" in request.binary_outputs:
            raw = encode_bytes_tensor(arr) if arr.dtype == object else np.ascontiguousarray(arr).astype(
                arr.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif arr.dtype == object:
            entry["data"] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
        else:
            entry["data"] = np.ascontiguousarray(arr).reshape(-1)
            inline.append(arr)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": entries}
    if request.id is not None:
        document["id"] = request.id
    header = dumps(document, inline)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
