"""KServe V2 inference bodies ⇄ numpy, in JSON and with the binary tensor extension.

Binary extension: the JSON header is the first ``Inference-Header-Content-Length``
bytes; each tensor with ``parameters.binary_data_size`` takes that many bytes of
the rest, in order (v2_tensor encodes and decodes one tensor). The server decodes
requests and encodes responses; the client and the load generator do the reverse.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.codecs.jsonio import CodecError
from server.codecs.v2_tensor import decode_tensor, encode_tensors, split_body

HEADER_LENGTH = "inference-header-content-length"


@dataclass
class V2Request:
    inputs: dict[str, np.ndarray]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None  # None: every output
    binary_outputs: set[str] = field(default_factory=set)


# Triton's parameters that batchserve does not implement, by where they appear, and why: refused (400,
# INVALID_ARGUMENT) rather than ignored. Implemented: the request's ``timeout``, ``priority``,
# ``signature_name`` (batchserve's) and ``binary_data_output``, an input's ``binary_data_size``, an output's
# ``binary_data``. Any other key is accepted and ignored (Triton passes such custom parameters to its
# backend). docs/grpc.md: "V2 parameters".
_SEQUENCE = "sequence batching is not implemented; send each request on its own"
_SHARED = "shared-memory tensors are not implemented; send the tensor's data in the request"
REFUSED_PARAMETERS: dict[str, dict[str, str]] = {
    "request": dict.fromkeys(("sequence_id", "sequence_start", "sequence_end"), _SEQUENCE),
    "input": dict.fromkeys(("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"), _SHARED),
    "output": {"classification": "classification (top-k labels) is not implemented; ask for the output itself",
               **dict.fromkeys(("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"), _SHARED)},
}


REFUSED_KEYS = {kind: frozenset(reasons) for kind, reasons in REFUSED_PARAMETERS.items()}
_REQUEST, _INPUT, _OUTPUT = REFUSED_KEYS["request"], REFUSED_KEYS["input"], REFUSED_KEYS["output"]


def check_parameters(kind: str, keys: Iterable[str], name: str = "") -> None:
    """Refuse a Triton parameter batchserve does not implement (the one rule; HTTP and gRPC both call it):
    ``kind`` is "request", "input" or "output", ``keys`` the parameters' names, ``name`` the tensor's. A hot
    path calls it only when ``REFUSED_KEYS[kind]`` and the keys intersect."""
    refused = REFUSED_PARAMETERS[kind]
    key = next((key for key in keys if key in refused), None)
    if key is not None:
        where = f"{kind} {name!r}: " if name else ""
        raise CodecError(f"{where}parameters.{key} is not supported: {refused[key]}")


MAX_TENSORS = 256  # inputs, and outputs asked for, per request: refused before any tensor is decoded


def decode_request(body: bytes, header_length: int | None = None) -> V2Request:
    """Parse an infer body (JSON, or JSON header plus binary tensors)."""
    document, binary = split_body(body, header_length)
    if not isinstance(document, dict):
        raise CodecError("request body must be a JSON object")
    inputs = _decode_inputs(document.get("inputs"), binary)
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise CodecError("'parameters' must be an object")
    if not _REQUEST.isdisjoint(parameters):
        check_parameters("request", parameters)
    request = V2Request(inputs=inputs, id=document.get("id"), parameters=parameters)
    wanted = document.get("outputs")  # the outputs asked for (None: all) and which travel as binary data
    binary_default = bool(parameters.get("binary_data_output", False))
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) and "name" in o for o in wanted):
            raise CodecError("'outputs' must be a list of objects with a 'name'")
        if len(wanted) > MAX_TENSORS:
            raise CodecError(f"request asks for {len(wanted)} outputs; at most {MAX_TENSORS} are accepted")
        request.outputs = [o["name"] for o in wanted]
        for o in wanted:
            options = o.get("parameters") or {}
            if not _OUTPUT.isdisjoint(options):
                check_parameters("output", options, o["name"])
            if options.get("binary_data", binary_default):
                request.binary_outputs.add(o["name"])
    elif binary_default:
        request.binary_outputs = {"*"}
    return request


def schedule_parameters(parameters: Mapping[str, Any]) -> tuple[float | None, int]:
    """``parameters.timeout`` (microseconds) in seconds, and ``parameters.priority`` (Triton's: 1 highest,
    0 the default; its range is the model's, checked by the service)."""
    timeout = parameters.get("timeout")
    if timeout is not None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise CodecError(f"parameters.timeout must be a positive number of microseconds, got {timeout!r}")
        timeout = timeout / 1e6
    priority = parameters.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise CodecError(f"parameters.priority must be a non-negative integer (1 is highest, 0 default), "
                         f"got {priority!r}")
    return timeout, priority


def signature_parameter(parameters: Mapping[str, Any]) -> str | None:
    """``parameters.signature_name``: the SavedModel signature to run (batchserve's; absent or "": the
    version's default), as TF Serving's ``signature_name``."""
    name = parameters.get("signature_name")
    if name is not None and not isinstance(name, str):
        raise CodecError(f"parameters.signature_name must be a string, got {name!r}")
    return name or None


def _decode_inputs(specs: Any, binary: memoryview) -> dict[str, np.ndarray]:
    if not isinstance(specs, list) or not specs:
        raise CodecError("request needs a non-empty 'inputs' list")
    if len(specs) > MAX_TENSORS:
        raise CodecError(f"request has {len(specs)} inputs; at most {MAX_TENSORS} are accepted")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise CodecError("each input needs a 'name'")
        if spec["name"] in inputs:
            raise CodecError(f"input {spec['name']!r} appears twice")
        options = spec.get("parameters")
        if options and not _INPUT.isdisjoint(options):
            check_parameters("input", options, spec["name"])
        inputs[spec["name"]], offset = decode_tensor(spec, binary, offset)
    if offset != len(binary):
        raise CodecError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    return inputs


def encode_response(model: str, version: str, outputs: Mapping[str, np.ndarray], request: V2Request
                    ) -> tuple[bytes, int | None]:
    """The infer response body, and the JSON header's length when binary outputs follow it."""
    names = request.outputs if request.outputs is not None else list(outputs)
    every = "*" in request.binary_outputs
    encoded = encode_tensors(((name, outputs[name], every or name in request.binary_outputs) for name in names),
                             errors="replace")
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": encoded.entries}
    if request.id is not None:
        document["id"] = request.id
    return encoded.body(document)


def _tensor(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    return arr.astype(object) if arr.dtype.kind in "SU" else arr


def encode_request(inputs: Mapping[str, Any], binary: bool, parameters: Mapping[str, Any] | None = None
                   ) -> tuple[bytes, int | None]:
    """An infer request body, and the JSON header's length when binary tensors follow it.

    ``binary``: every input travels as raw bytes and every output is asked for that way.
    Numbers are written at full precision; numpy string arrays travel as BYTES.
    """
    encoded = encode_tensors((name, _tensor(value), binary) for name, value in inputs.items())
    document: dict[str, Any] = {"inputs": encoded.entries}
    params = dict(parameters or {})
    if binary:
        params["binary_data_output"] = True
    if params:
        document["parameters"] = params
    return encoded.body(document)


def request_headers(header_length: int | None) -> dict[str, str]:
    """The HTTP headers for a body from encode_request: its Content-Type, and the header length if binary."""
    if header_length is None:
        return {"Content-Type": "application/json"}
    return {"Inference-Header-Content-Length": str(header_length), "Content-Type": "application/octet-stream"}


def decode_response(body: bytes, header_length: int | None = None) -> dict[str, np.ndarray]:
    """The output arrays of an infer response (JSON, or JSON header plus binary tensors)."""
    document, binary = split_body(body, header_length)
    outputs: dict[str, np.ndarray] = {}
    offset = 0
    for entry in document["outputs"]:
        outputs[entry["name"]], offset = decode_tensor(entry, binary, offset)
    return outputs
