"""Request bodies for the demo models in each wire format, encoded once and reused.

Encoding one 96x96x3 image as JSON costs the generator ~20 ms: never per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from server.codecs.v2 import encode_request, request_headers

FORMATS = ("v2_binary", "v2_json", "tfserving_json")


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
    if model == "tabular":
        return {"features": rng.standard_normal((rows, 32)).astype(np.float32)}
    if model == "spam":
        texts = ["win a free cruise now", "are we still meeting at noon", "claim your gift card today"]
        return {"text": np.array([texts[i % 3].encode() for i in range(rows)], dtype=object)}
    raise ValueError(f"no example inputs for model {model!r}")


def encode(model: str, fmt: str, rows: int = 1, seed: int = 0, timeout_us: int | None = None) -> Payload:
    """One request for ``model`` in wire format ``fmt`` (one of FORMATS); V2 ones may carry a deadline."""
    inputs = example_inputs(model, rows, seed)
    deadline = {"timeout": timeout_us} if timeout_us else {}
    if fmt in ("v2_binary", "v2_json"):
        body, header_length = encode_request(inputs, binary=fmt == "v2_binary", parameters=deadline)
        headers = request_headers(header_length)
        return Payload(f"/v2/models/{model}/infer", body, headers.pop("Content-Type"), headers)
    if fmt == "tfserving_json":
        ((_, arr),) = inputs.items()
        values = [v.decode() for v in arr] if arr.dtype == object else arr
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
