"""Request bodies for the demo models in each wire format, encoded once and reused.

Encoding one 96x96x3 image as JSON costs the generator ~20 ms: never per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

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


def _v2_specs(inputs: dict[str, np.ndarray], binary: bool) -> tuple[list[dict], list[bytes]]:
    specs, chunks = [], []
    for name, arr in inputs.items():
        datatype = "BYTES" if arr.dtype == object else {"float32": "FP32", "int32": "INT32", "int64": "INT64"}[
            arr.dtype.name]
        spec: dict = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if binary:
            raw = (b"".join(len(v).to_bytes(4, "little") + v for v in arr.reshape(-1)) if arr.dtype == object
                   else arr.tobytes())
            spec["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            spec["data"] = ([v.decode() for v in arr.reshape(-1)] if arr.dtype == object
                            else np.round(arr.reshape(-1).astype(np.float64), 4).tolist())
        specs.append(spec)
    return specs, chunks


def encode(model: str, fmt: str, rows: int = 1, seed: int = 0, timeout_us: int | None = None) -> Payload:
    """One request for ``model`` in wire format ``fmt`` (one of FORMATS); V2 ones may carry a deadline."""
    inputs = example_inputs(model, rows, seed)
    deadline = {"timeout": timeout_us} if timeout_us else {}
    if fmt == "v2_binary":
        specs, chunks = _v2_specs(inputs, binary=True)
        header = orjson.dumps({"inputs": specs, "parameters": {"binary_data_output": True, **deadline}})
        return Payload(f"/v2/models/{model}/infer", header + b"".join(chunks), "application/octet-stream",
                       {"Inference-Header-Content-Length": str(len(header))})
    if fmt == "v2_json":
        specs, _ = _v2_specs(inputs, binary=False)
        document = {"inputs": specs, "parameters": deadline} if deadline else {"inputs": specs}
        return Payload(f"/v2/models/{model}/infer", orjson.dumps(document), "application/json", {})
    if fmt == "tfserving_json":
        ((_, arr),) = inputs.items()
        values = ([v.decode() for v in arr] if arr.dtype == object
                  else np.round(arr.astype(np.float64), 4).tolist())
        return Payload(f"/v1/models/{model}:predict", orjson.dumps({"instances": values}), "application/json", {})
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
