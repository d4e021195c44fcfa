"""V2 parameters, one rule on every decoder (server/codecs/v2.py: check_parameters): Triton's parameters that
batchserve does not implement are refused, naming the parameter and why (HTTP JSON and binary: 400; gRPC,
general and planned: INVALID_ARGUMENT); any other parameter is accepted and ignored."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from ..harness import Client, Served, serving
from ..payloads import INFER, binary_body, grpc_infer_request, grpc_totals

SEQUENCE = "sequence batching is not implemented; send each request on its own"
SHARED = "shared-memory tensors are not implemented; send the tensor's data in the request"
# (where: request, input or output; the parameter; its value; the message)
REFUSED = [
    ("request", "sequence_id", 7, f"parameters.sequence_id is not supported: {SEQUENCE}"),
    ("request", "sequence_start", True, f"parameters.sequence_start is not supported: {SEQUENCE}"),
    ("request", "sequence_end", True, f"parameters.sequence_end is not supported: {SEQUENCE}"),
    ("input", "shared_memory_region", "region0",
     f"input 'features': parameters.shared_memory_region is not supported: {SHARED}"),
    ("output", "classification", 2, "output 'total': parameters.classification is not supported: classification "
     "(top-k labels) is not implemented; ask for the output itself"),
    ("output", "shared_memory_byte_size", 4,
     f"output 'total': parameters.shared_memory_byte_size is not supported: {SHARED}"),
]
IDS = [f"{where}-{key}" for where, key, _, _ in REFUSED]
CUSTOM = [("request", "my_tag", "abc"), ("input", "my_hint", 3), ("output", "my_flag", True)]


@pytest.fixture
async def served(repository: Path) -> AsyncIterator[Served]:
    async with serving(repository, grpc=True) as server:
        yield server


def _http_body(binary: bool, *parameters: tuple[str, str, Any]) -> tuple[bytes | dict[str, Any], dict[str, str]]:
    rows = np.full((2, 4), 1.5, np.float32)
    tensor: dict[str, Any] = {"name": "features", "datatype": "FP32", "shape": [2, 4]}
    tensor.update({"parameters": {"binary_data_size": rows.nbytes}} if binary else {"data": rows.ravel().tolist()})
    document: dict[str, Any] = {"inputs": [tensor], "outputs": [{"name": "total"}]}
    for where, key, value in parameters:
        holder = {"request": document, "input": tensor, "output": document["outputs"][0]}[where]
        holder.setdefault("parameters", {})[key] = value
    return binary_body(document, rows.tobytes()) if binary else (document, {})


def _grpc_request(planned: bool, *parameters: tuple[str, str, Any]) -> Any:
    """Raw contents (a plan takes it) or typed contents (the general path)."""
    request = grpc_infer_request(1.5, rows=2)
    if not planned:
        del request.raw_input_contents[:]
        request.inputs[0].contents.fp32_contents.extend([1.5] * 8)
    output = request.outputs.add(name="total")
    for where, key, value in parameters:
        holder = {"request": request, "input": request.inputs[0], "output": output}[where]
        kind = {bool: "bool_param", int: "int64_param", str: "string_param"}[type(value)]
        setattr(holder.parameters[key], kind, value)
    return request


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(("where", "key", "value", "error"), REFUSED, ids=IDS)
async def test_http_refuses_what_is_not_implemented(served: Served, binary: bool, where: str, key: str, value: Any,
                                                    error: str) -> None:
    http: Client = served.client("socket")
    body, headers = _http_body(binary, (where, key, value))
    answer = await http.post(INFER, body, headers)
    assert (answer.status, answer.json()) == (400, {"error": error})


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
async def test_http_ignores_custom_parameters(served: Served, binary: bool) -> None:
    http: Client = served.client("socket")
    body, headers = _http_body(binary, *CUSTOM)
    answer = await http.post(INFER, body, headers)
    assert answer.status == 200
    assert answer.json()["outputs"][0]["data"] == [1.5, 1.5]


@pytest.mark.parametrize("planned", [False, True], ids=["general", "planned"])
@pytest.mark.parametrize(("where", "key", "value", "error"), REFUSED, ids=IDS)
async def test_grpc_refuses_what_is_not_implemented(stub: Any, planned: bool, where: str, key: str, value: Any,
                                                    error: str) -> None:
    for _ in range(2):  # the second time, a planned header is known
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(_grpc_request(planned, (where, key, value)), timeout=10)
        assert (raised.value.code(), raised.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, error)


@pytest.mark.parametrize("planned", [False, True], ids=["general", "planned"])
async def test_grpc_ignores_custom_parameters(stub: Any, planned: bool) -> None:
    for _ in range(2):
        answer = await stub.ModelInfer(_grpc_request(planned, *CUSTOM), timeout=10)
        if planned:
            assert grpc_totals(answer) == [1.5, 1.5]
        else:
            assert list(answer.outputs[0].contents.fp32_contents) == [1.5, 1.5]
