"""One KServe V2 tensor ⇄ numpy, and the framing of a body with binary tensors.

A tensor is an entry ``{"name", "datatype", "shape"}`` with either ``data`` (a JSON
list, flat or nested) or ``parameters.binary_data_size``: that many bytes of the
binary data after the JSON header, in entry order. BYTES elements are a 4-byte
little-endian length, then the bytes. Requests and responses, server and client,
all encode and decode tensors here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.codecs.jsonio import CodecError, dumps, loads
from server.core.vocabulary import dtype_from_v2, v2_datatype

_OBJECT = np.dtype(object)


def split_body(body: bytes, header_length: int | None) -> tuple[Any, memoryview]:
    """The parsed JSON header and the binary data after it (empty when ``header_length`` is None)."""
    if header_length is None:
        return loads(body), memoryview(b"")
    if not 0 < header_length <= len(body):
        raise CodecError(f"Inference-Header-Content-Length {header_length} does not fit a {len(body)}-byte body")
    return loads(body[:header_length]), memoryview(body)[header_length:]


def encode_bytes_tensor(arr: np.ndarray) -> bytes:
    """BYTES elements packed for the binary extension; ``str`` elements as UTF-8."""
    parts = []
    for item in arr.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts += [struct.pack("<I", len(data)), data]
    return b"".join(parts)


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


def raw_bytes(arr: np.ndarray) -> bytes:
    """A tensor's raw form (binary extension, gRPC raw contents): little-endian values in C order, or
    length-prefixed BYTES elements."""
    if arr.dtype == _OBJECT:
        return encode_bytes_tensor(arr)
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def encode_tensor(name: str, arr: np.ndarray, binary: bool, errors: str = "strict") -> tuple[dict[str, Any], bytes]:
    """A tensor's JSON entry, and its raw bytes when ``binary`` (else b"").

    Numbers stay numpy arrays (serialised at full precision); BYTES elements become
    text, undecodable bytes handled as ``errors`` says (``bytes.decode``).
    """
    entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
    if binary:
        raw = raw_bytes(arr)
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    if arr.dtype == _OBJECT:
        entry["data"] = [v.decode("utf-8", errors) if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    else:
        entry["data"] = np.ascontiguousarray(arr).reshape(-1)
    return entry, b""


@dataclass
class EncodedTensors:
    """Tensors' entries for a body's JSON header, and the binary data that follows it."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    inline: list[np.ndarray] = field(default_factory=list)  # numeric data in the JSON: where NaN can be

    def body(self, document: Mapping[str, Any]) -> tuple[bytes, int | None]:
        """``document`` (holding ``entries``) as the body, and the JSON header's length when binary data follows."""
        header = dumps(document, self.inline)
        if not self.chunks:
            return header, None
        return b"".join([header, *self.chunks]), len(header)


def encode_tensors(tensors: Iterable[tuple[str, np.ndarray, bool]], errors: str = "strict") -> EncodedTensors:
    """Each ``(name, array, binary)`` encoded with encode_tensor, in order."""
    encoded = EncodedTensors()
    for name, arr, binary in tensors:
        entry, raw = encode_tensor(name, arr, binary, errors)
        encoded.entries.append(entry)
        if binary:
            encoded.chunks.append(raw)
        elif arr.dtype != _OBJECT:
            encoded.inline.append(arr)
    return encoded


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


def _json_data(spec: Mapping[str, Any], name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    data = spec.get("data")
    if data is None:
        raise CodecError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    if dtype == _OBJECT:
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


def _binary_data(spec: Mapping[str, Any], name: str, dtype: np.dtype, shape: tuple[int, ...], raw: memoryview
                 ) -> np.ndarray:
    count = math.prod(shape)
    if dtype == _OBJECT:
        if count * 4 > len(raw):  # each element carries a 4-byte length: checked before anything is allocated
            raise CodecError(f"input {name!r}: binary BYTES data ends before element {len(raw) // 4} "
                             f"(shape {list(shape)} needs at least {count * 4} bytes)")
        return decode_bytes_tensor(raw, count, name).reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise CodecError(f"input {name!r}: shape {list(shape)} of {spec['datatype']} needs "
                         f"{count * dtype.itemsize} bytes, binary_data_size is {len(raw)}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)


def decode_tensor(spec: Mapping[str, Any], binary: memoryview, offset: int) -> tuple[np.ndarray, int]:
    """One named entry as an array, its binary data (if any) read from ``binary[offset:]``; and the next offset."""
    name = spec["name"]
    dims = spec.get("shape")
    if not isinstance(dims, list) or not all(isinstance(d, int) and d >= 0 for d in dims):
        raise CodecError(f"input {name!r}: 'shape' must be a list of non-negative integers, got {dims!r}")
    shape = tuple(dims)
    try:
        dtype = dtype_from_v2(spec.get("datatype", ""))
    except ValueError as exc:
        raise CodecError(f"input {name!r}: {exc}") from None
    size = (spec.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return _json_data(spec, name, dtype, shape), offset
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise CodecError(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
    return _binary_data(spec, name, dtype, shape, binary[offset : offset + size]), offset + size
