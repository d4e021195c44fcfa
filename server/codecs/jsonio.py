"""JSON in and out: orjson on the fast path, the standard library where TF Serving's NaN/Infinity appear."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


class CodecError(ValueError):
    """The request body cannot be decoded into tensors (HTTP 400); the message says where."""


def loads(body: bytes) -> Any:
    """Parse a body; NaN, Infinity and -Infinity literals are accepted as TF Serving does."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if b"NaN" in body or b"Infinity" in body:
            try:
                return json.loads(body)
            except ValueError:
                pass
        raise CodecError(f"request body is not valid JSON: {exc}") from None


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "fc" and not bool(np.isfinite(value).all())
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nonfinite(v) for v in value)
    return False


def dumps(document: Any, arrays: list[np.ndarray] | None = None) -> bytes:
    """Serialise with numpy arrays inline; NaN and Infinity are written as TF Serving writes them.

    ``arrays``: the only places non-finite numbers can be, when the caller knows (skips a full walk).
    """
    nonfinite = any(map(_has_nonfinite, arrays)) if arrays is not None else _has_nonfinite(document)
    if nonfinite:
        return json.dumps(_plain(document), allow_nan=True, separators=(",", ":")).encode()
    return orjson.dumps(document, option=_NUMPY)
