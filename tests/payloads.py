"""Request payloads shared by the tests, defined once: the synthetic model ``syn``'s V2 infer path and
body, V2 binary bodies, and the KServe V2 gRPC request for ``syn``.

``syn`` (tests/observe.py: ``synthetic_repository``; tests/harness.py: ``SYN``) takes ``features``
FP32 [-1, 4] and answers ``total`` FP32 [-1, 1]: each row's first value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

INFER = "/v2/models/syn/infer"


def row_body(value: float, rows: int = 1, timeout_us: int | None = None) -> dict[str, Any]:
    """A V2 JSON infer body for ``syn``: ``rows`` rows of ``value``; ``timeout_us``: ``parameters.timeout``."""
    body: dict[str, Any] = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 4],
                                         "data": [value] * (4 * rows)}]}
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return body


def binary_body(document: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A V2 body with the binary tensor extension: the JSON header, then ``chunks``; and its HTTP headers."""
    header = orjson.dumps(document)
    return header + b"".join(chunks), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


def split_binary(response: Any) -> tuple[dict[str, Any], bytes]:
    """A binary V2 answer (anything with ``content`` and ``headers``) as its JSON header and the bytes after it."""
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


def grpc_infer_request(value: float, rows: int = 1, timeout_us: int | None = None, model: str = "syn") -> Any:
    """A KServe V2 ``ModelInferRequest`` (Triton's generated class) for ``syn``-shaped ``model``: ``rows`` rows
    of ``value`` as raw contents; ``timeout_us``: ``parameters.timeout``."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="features", datatype="FP32", shape=[rows, 4])
    request.raw_input_contents.append(np.full((rows, 4), value, np.float32).tobytes())
    if timeout_us is not None:
        request.parameters["timeout"].int64_param = timeout_us
    return request


def grpc_totals(response: Any) -> list[float]:
    """``syn``'s output in a ``ModelInferResponse``: each row's first value."""
    return np.frombuffer(response.raw_output_contents[0], np.float32).tolist()
