"""TensorFlow Serving REST bodies ⇄ numpy: row (``instances``) and columnar (``inputs``) formats.

Binary strings travel as ``{"b64": "..."}``; string outputs whose name ends in
``_bytes`` are written back that way, other strings as UTF-8 text (TF Serving's rule).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.codecs.jsonio import CodecError, dumps, loads
from server.core.vocabulary import Signature


@dataclass
class PredictRequest:
    inputs: dict[str, np.ndarray]
    signature_name: str | None
    row_format: bool


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _string_element(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise CodecError("a {'b64': ...} value is not valid base64") from None
    raise CodecError(f"expected a string or {{'b64': ...}}, got {type(value).__name__}")


_to_bytes = np.frompyfunc(_string_element, 1, 1)


def _tensor(name: str, value: Any, string: bool, dtype: np.dtype | None) -> np.ndarray:
    try:
        if string:
            arr = np.array(value, dtype=object)
            return np.asarray(_to_bytes(arr), dtype=object) if arr.ndim else np.array(_string_element(value))
        return np.asarray(value, dtype=dtype)
    except CodecError as exc:
        raise CodecError(f"input {name!r}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise CodecError(f"input {name!r} is not a regular (non-ragged) array of the expected type: {exc}") from None


def decode_predict(body: bytes, signature_of: Any) -> PredictRequest:
    """Parse a predict body; ``signature_of(signature_name)`` gives the Signature to read it with."""
    document = loads(body)
    if not isinstance(document, dict):
        raise CodecError("request body must be a JSON object")
    has_rows, has_cols = "instances" in document, "inputs" in document
    if has_rows == has_cols:
        raise CodecError("request must have exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    signature_name = document.get("signature_name")
    if signature_name is not None and not isinstance(signature_name, str):
        raise CodecError("'signature_name' must be a string")
    signature: Signature = signature_of(signature_name)
    specs = signature.inputs
    if has_rows:
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise CodecError("'instances' must be a non-empty list")
        named = all(isinstance(i, dict) and not _is_b64(i) for i in instances)
        if named:
            for index, instance in enumerate(instances):
                if set(instance) != set(instances[0]):
                    raise CodecError(f"instance {index} has inputs {sorted(instance)}, instance 0 has "
                                     f"{sorted(instances[0])}")
            values: dict[str, Any] = {key: [instance[key] for instance in instances] for key in instances[0]}
        elif len(specs) == 1:
            values = {next(iter(specs)): instances}
        else:
            raise CodecError(f"the signature has inputs {sorted(specs)}: each instance must be an object naming them")
    else:
        raw = document["inputs"]
        if isinstance(raw, dict) and not _is_b64(raw):
            values = raw
        elif len(specs) == 1:
            values = {next(iter(specs)): raw}
        else:
            raise CodecError(f"the signature has inputs {sorted(specs)}: 'inputs' must be an object naming them")
    inputs = {}
    for name, value in values.items():
        spec = specs.get(name)
        string = spec.is_string if spec is not None else False
        inputs[name] = _tensor(name, value, string, spec.dtype if spec is not None and not string else None)
    return PredictRequest(inputs, signature_name, has_rows)


def _text(name: str, arr: np.ndarray) -> Any:
    """Strings for JSON: UTF-8 text, or {'b64': ...} for *_bytes outputs and undecodable bytes."""
    as_b64 = name.endswith("_bytes")

    def one(value: Any) -> Any:
        data = value if isinstance(value, bytes) else str(value).encode()
        if not as_b64:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(data).decode("ascii")}

    return np.frompyfunc(one, 1, 1)(arr).tolist() if arr.ndim else one(arr.item())


def _jsonable(name: str, arr: np.ndarray) -> Any:
    return _text(name, arr) if arr.dtype == object else np.ascontiguousarray(arr)


def encode_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    """``{"predictions": ...}`` for row requests, ``{"outputs": ...}`` for columnar ones."""
    numeric = [arr for arr in outputs.values() if arr.dtype != object]
    key = "predictions" if row_format else "outputs"
    if len(outputs) == 1:
        ((name, arr),) = outputs.items()
        return dumps({key: _jsonable(name, arr)}, numeric)
    if not row_format:
        return dumps({key: {name: _jsonable(name, arr) for name, arr in outputs.items()}}, numeric)
    columns = {name: (_text(name, arr) if arr.dtype == object else arr.tolist()) for name, arr in outputs.items()}
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return dumps({key: rows}, numeric)
