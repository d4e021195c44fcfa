"""Request bodies for the demo models in each wire format, encoded once and reused.

Encoding one 96x96x3 image as JSON costs the generator ~20 ms: never per request.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import orjson

from server.codecs.v2 import encode_request, request_headers

FORMATS = ("v2_binary", "v2_json", "tfserving_json")
BINARY_ONLY = frozenset({"image_jpeg"})  # models whose inputs V2 JSON cannot carry (raw bytes)


@dataclass(frozen=True)
class Payload:
    path: str
    body: bytes
    content_type: str
    headers: dict[str, str]


def example_inputs(model: str, rows: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if model == "image_classifier":
        return {"image": rng.random((rows, 96, 96, 3), dtype=np.float32)}
    if model == "image_uint8":
        return {"image": rng.integers(0, 256, (rows, 96, 96, 3), dtype=np.uint8)}
    if model == "image_jpeg":
        return {"image_bytes": np.array([example_jpeg(seed + i) for i in range(rows)], dtype=object)}
    if model == "tabular":
        return {"features": rng.standard_normal((rows, 32)).astype(np.float32)}
    if model == "spam":
        texts = ["win a free cruise now", "are we still meeting at noon", "claim your gift card today"]
        return {"text": np.array([texts[i % 3].encode() for i in range(rows)], dtype=object)}
    raise ValueError(f"no example inputs for model {model!r}")


def example_jpeg(seed: int = 0) -> bytes:
    """A 128x128 JPEG of a photo-like image (``demo_models.example_photo``): about 6 KB. Encoded with Pillow,
    else TensorFlow."""
    from server.tools.demo_models import example_photo

    pixels = example_photo(128, seed)
    try:
        from PIL import Image
    except ImportError:
        import tensorflow as tf

        return bytes(tf.io.encode_jpeg(pixels, quality=85).numpy())
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def encode(model: str, fmt: str, rows: int = 1, seed: int = 0, timeout_us: int | None = None) -> Payload:
    """One request for ``model`` in wire format ``fmt`` (one of FORMATS); V2 ones may carry a deadline."""
    inputs = example_inputs(model, rows, seed)
    deadline = {"timeout": timeout_us} if timeout_us else {}
    if fmt == "v2_json" and model in BINARY_ONLY:
        raise ValueError(f"{model}'s JPEG bytes have no V2 JSON form (its strings are UTF-8 text): use v2_binary, "
                         "or tfserving_json (base64)")
    if fmt in ("v2_binary", "v2_json"):
        body, header_length = encode_request(inputs, binary=fmt == "v2_binary", parameters=deadline)
        headers = request_headers(header_length)
        return Payload(f"/v2/models/{model}/infer", body, headers.pop("Content-Type"), headers)
    if fmt == "tfserving_json":
        ((name, arr),) = inputs.items()
        # TF Serving's rule: binary strings as {"b64": ...}, for inputs whose names end in _bytes
        values = arr if arr.dtype != object else [
            {"b64": base64.b64encode(v).decode()} if name.endswith("_bytes") else v.decode() for v in arr]
        body = orjson.dumps({"instances": values}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Payload(f"/v1/models/{model}:predict", body, "application/json", {})
    raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")


BAD_BODIES: list[tuple[str, bytes]] = [
    ("/v2/models/tabular/infer", b"{not json"),
    ("/v2/models/tabular/infer", b'{"inputs": []}'),
    ("/v2/models/tabular/infer", b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 31], '
                                 b'"data": [' + b",".join([b"1"] * 31) + b"]}]}"),
    ("/v2/models/tabular/infer", b'{"inputs": [{"name": "features", "datatype": "FP64", "shape": [1, 32], '
                                 b'"data": [' + b",".join([b"1"] * 32) + b"]}]}"),
    ("/v1/models/tabular:predict", b'{"instances": [[1, 2], [3]]}'),
    ("/v1/models/spam:predict", b'{"instances": [1, 2, 3]}'),
    ("/v1/models/missing:predict", b'{"instances": [1]}'),
    ("/v2/models/tabular/versions/99/infer", b'{"inputs": []}'),
]
