"""KServe V2 over HTTP, in JSON and with the binary tensor extension, through each route into the server:
the in-protocol fast path on a socket, the ASGI fast path, and FastAPI's own routes answer alike."""

from __future__ import annotations

import struct

import numpy as np

from ..harness import Client
from ..payloads import INFER, binary_body, row_body, split_binary

MIXED_INFER = "/v2/models/mixed/infer"


async def test_json_infer_answers_each_row(http: Client) -> None:
    answer = await http.post(INFER, {**row_body(2.5, rows=3), "id": "req-7"})
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"model_name": "syn", "model_version": "1", "id": "req-7", "outputs": [
        {"name": "total", "datatype": "FP32", "shape": [3, 1], "data": [2.5, 2.5, 2.5]}]}


async def test_a_version_named_in_the_path_is_served(http: Client) -> None:
    answer = await http.post("/v2/models/syn/versions/1/infer", row_body(4.0))
    assert answer.status == 200
    assert answer.json()["model_version"] == "1"
    assert answer.json()["outputs"][0]["data"] == [4.0]


async def test_two_inputs_and_a_string_output_in_json(http: Client) -> None:
    answer = await http.post(MIXED_INFER, {"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
        {"name": "b", "datatype": "INT32", "shape": [2], "data": [10, 20]}]})
    assert answer.status == 200
    assert answer.json() == {"model_name": "mixed", "model_version": "1", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["11.0", "24.0"]},
        {"name": "total", "datatype": "FP32", "shape": [2], "data": [11.0, 24.0]}]}


async def test_binary_inputs_and_outputs(http: Client) -> None:
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    body, headers = binary_body(
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 4],
                     "parameters": {"binary_data_size": rows.nbytes}}],
         "outputs": [{"name": "total", "parameters": {"binary_data": True}}]}, rows.tobytes())
    answer = await http.post(INFER, body, headers)
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    header, data = split_binary(answer)
    assert header == {"model_name": "syn", "model_version": "1", "outputs": [
        {"name": "total", "datatype": "FP32", "shape": [2, 1], "parameters": {"binary_data_size": 8}}]}
    assert np.frombuffer(data, np.float32).tolist() == [0.0, 4.0]


async def test_only_the_outputs_asked_for_and_binary_strings(http: Client) -> None:
    a = np.array([[1, 0, 0], [2, 0, 0]], np.float32)
    body, headers = binary_body(
        {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": a.nbytes}},
                    {"name": "b", "datatype": "INT32", "shape": [2], "data": [10, 20]}],
         "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}, a.tobytes())
    answer = await http.post(MIXED_INFER, body, headers)
    assert answer.status == 200
    header, data = split_binary(answer)
    assert header["outputs"] == [{"name": "label", "datatype": "BYTES", "shape": [2],
                                  "parameters": {"binary_data_size": 16}}]
    assert data == struct.pack("<I", 4) + b"11.0" + struct.pack("<I", 4) + b"22.0"


async def test_binary_data_output_parameter_asks_every_output_in_binary(http: Client) -> None:
    answer = await http.post(INFER, {**row_body(3.0, rows=2), "parameters": {"binary_data_output": True}})
    assert answer.status == 200
    header, data = split_binary(answer)
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert np.frombuffer(data, np.float32).tolist() == [3.0, 3.0]


async def test_metadata_and_readiness(http: Client) -> None:
    server = await http.get("/v2")
    assert server.status == 200 and server.json()["name"] == "batchserve"
    assert "binary_tensor_data" in server.json()["extensions"]
    assert (await http.get("/v2/health/live")).json() == {"live": True}
    metadata = await http.get("/v2/models/syn")
    assert metadata.json() == {"name": "syn", "versions": ["1"], "platform": "synthetic", "backend": "synthetic",
                               "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
                               "outputs": [{"name": "total", "datatype": "FP32", "shape": [-1, 1]}]}
    assert (await http.get("/v2/models/syn/versions/1")).json() == metadata.json()
    assert (await http.get("/v2/models/syn/ready")).json() == {"name": "syn", "ready": True}
    assert (await http.get("/v2/models/syn/versions/1/ready")).status == 200
    not_ready = await http.get("/v2/models/broken/ready")
    assert not_ready.status == 503 and not_ready.json()["ready"] is False
    assert (await http.get("/v2/models/nope/ready")).status == 404
    assert (await http.get("/v2/health/ready")).status == 503  # a model that failed to load: not ready
