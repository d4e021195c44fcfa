"""KServe V2 against a real server: JSON, the binary tensor extension, parameters, errors."""

from __future__ import annotations

import struct

import httpx
import numpy as np
import pytest

from ..payloads import binary_body, split_binary
from ..reference import direct


@pytest.fixture(scope="module")
def http(demo_server):
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        yield client


def test_server_metadata_and_health(http):
    assert http.get("/v2").json()["name"] == "batchserve"
    assert "binary_tensor_data" in http.get("/v2").json()["extensions"]
    assert http.get("/v2/health/live").status_code == 200
    assert http.get("/v2/health/ready").json() == {"ready": True}


def test_model_metadata_and_ready(http):
    body = http.get("/v2/models/spam").json()
    assert body["name"] == "spam" and body["versions"] == ["1"]
    assert body["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"]: o["datatype"] for o in body["outputs"]} == {"label": "BYTES", "spam_probability": "FP32"}
    assert http.get("/v2/models/spam/versions/1").status_code == 200
    assert http.get("/v2/models/spam/ready").json() == {"name": "spam", "ready": True}
    assert http.get("/v2/models/spam/versions/1/ready").status_code == 200
    assert http.get("/v2/models/nope/ready").status_code == 404


def test_json_infer_equals_direct_call(http, demo_repository):
    rows = np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)
    body = {"id": "req-1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 32],
                                       "data": rows.reshape(-1).tolist()}]}
    response = http.post("/v2/models/tabular/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "req-1" and result["model_name"] == "tabular" and result["model_version"] == "1"
    (output,) = result["outputs"]
    assert output["name"] == "score" and output["datatype"] == "FP32" and output["shape"] == [3, 1]
    expected = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(np.array(output["data"]).reshape(3, 1), expected, rtol=1e-5, atol=1e-6)


def test_json_infer_nested_data_and_bytes(http):
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["win a free iphone now", "hi"]}]}
    result = http.post("/v2/models/spam/infer", json=body).json()
    outputs = {o["name"]: o for o in result["outputs"]}
    assert outputs["label"]["data"][0] == "spam" and outputs["label"]["datatype"] == "BYTES"
    nested = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]}
    result = http.post("/v2/models/scale/infer", json=nested).json()
    assert result["outputs"][0]["data"] == [2, 4, 6, 8, 10, 12, 14, 16]


def test_binary_infer_both_directions(http, demo_repository):
    images = np.random.default_rng(3).random((2, 96, 96, 3), dtype=np.float32)
    content, headers = binary_body(
        {"inputs": [{"name": "image", "datatype": "FP32", "shape": [2, 96, 96, 3],
                     "parameters": {"binary_data_size": images.nbytes}}],
         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]},
        images.tobytes())
    response = http.post("/v2/models/image_classifier/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    header, raw = split_binary(response)
    (output,) = header["outputs"]
    assert output["parameters"]["binary_data_size"] == len(raw) == 2 * 10 * 4
    got = np.frombuffer(raw, dtype="<f4").reshape(output["shape"])
    expected = direct(demo_repository / "image_classifier" / "1", image=images)["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_binary_bytes_tensors_and_output_selection(http):
    texts = [b"claim your gift card today", b"see you at the office around noon"]
    raw = b"".join(struct.pack("<I", len(t)) + t for t in texts)
    content, headers = binary_body(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(raw)}}],
         "outputs": [{"name": "label", "parameters": {"binary_data": True}}]},
        raw)
    response = http.post("/v2/models/spam/infer", content=content, headers=headers)
    assert response.status_code == 200, response.text
    header, data = split_binary(response)
    assert [o["name"] for o in header["outputs"]] == ["label"]
    labels, offset = [], 0
    while offset < len(data):
        (n,) = struct.unpack_from("<I", data, offset)
        labels.append(data[offset + 4 : offset + 4 + n])
        offset += 4 + n
    assert labels == [b"spam", b"ham"]


def test_two_inputs_int_and_float(http):
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
                       {"name": "b", "datatype": "INT32", "shape": [2], "data": [10, 20]}]}
    outputs = {o["name"]: o for o in http.post("/v2/models/two_io/infer", json=body).json()["outputs"]}
    assert outputs["total"]["data"] == [16.0, 35.0] and outputs["doubled"]["data"] == [20, 40]
    assert outputs["doubled"]["datatype"] == "INT32"


def test_timeout_and_priority_parameters_are_accepted(http):
    body = {"parameters": {"timeout": 5_000_000, "priority": 1},
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]}
    assert http.post("/v2/models/scale/infer", json=body).status_code == 200


def _x(shape, data, datatype="FP32"):
    return {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v2/models/nope/infer", _x([1, 4], [1] * 4), 404, "model 'nope'"),
        ("/v2/models/scale/versions/9/infer", _x([1, 4], [1] * 4), 404, "no version 9"),
        ("/v2/models/scale/infer", {"inputs": []}, 400, "non-empty 'inputs'"),
        ("/v2/models/scale/infer", _x([1, 4], [1] * 3), 400, "needs 4 elements, data has 3"),
        ("/v2/models/scale/infer", _x([1, 5], [1] * 5), 400, "dimension 1 must be 4"),
        ("/v2/models/scale/infer", _x([4], [1] * 4), 400, "rank 2"),
        ("/v2/models/scale/infer", _x([0, 4], []), 400, "empty batch"),
        ("/v2/models/scale/infer", _x([1, 4], [1] * 4, "FP99"), 400, "unknown datatype 'FP99'"),
        ("/v2/models/scale/infer", _x([1, 4], [1] * 4, "FP64"), 400, "expects FP32 (float32), got float64"),
        ("/v2/models/scale/infer", _x([2, 4], [[1, 2, 3, 4], [1, 2]]), 400, "not a regular array"),
        ("/v2/models/scale/infer", _x([1, 4], ["a", "b", "c", "d"]), 400, "not a regular array"),
        ("/v2/models/scale/infer", {**_x([1, 4], [1] * 4), "outputs": [{"name": "zz"}]}, 400, "unknown output 'zz'"),
        ("/v2/models/scale/infer", {**_x([1, 4], [1] * 4), "parameters": {"timeout": -1}}, 400, "parameters.timeout"),
        ("/v2/models/scale/infer", {**_x([1, 4], [1] * 4), "parameters": {"priority": 99}}, 400, "priority"),
    ],
)
def test_errors_name_the_problem(http, path, body, status, fragment):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_binary_size_mismatch_is_400(http):
    content, headers = binary_body(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 12}}]},
        b"\0" * 12)
    response = http.post("/v2/models/scale/infer", content=content, headers=headers)
    assert response.status_code == 400 and "needs 16 bytes" in response.json()["error"]
    response = http.post("/v2/models/scale/infer", content=b"{}", headers={"Inference-Header-Content-Length": "99"})
    assert response.status_code == 400


def test_unknown_route_is_json_404(http):
    response = http.get("/v3/whatever")
    assert response.status_code == 404 and "error" in response.json()
