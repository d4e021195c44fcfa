"""The TensorFlow Serving REST API, row (``instances``) and columnar (``inputs``), through each route into the
server; model status and metadata."""

from __future__ import annotations

import base64

import pytest

from ..harness import Client

PREDICT = "/v1/models/syn:predict"


async def test_row_format_answers_predictions(http: Client) -> None:
    answer = await http.post(PREDICT, {"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]})
    assert answer.status == 200
    assert answer.json() == {"predictions": [[1.0], [5.0]]}


async def test_columnar_format_answers_outputs(http: Client) -> None:
    answer = await http.post(PREDICT, {"inputs": [[9, 0, 0, 0]], "signature_name": "serving_default"})
    assert answer.status == 200
    assert answer.json() == {"outputs": [[9.0]]}


@pytest.mark.parametrize("path", ["/v1/models/syn/versions/1:predict", "/v1/models/syn/labels/stable:predict"])
async def test_a_version_or_label_in_the_path(http: Client, path: str) -> None:
    answer = await http.post(path, {"instances": [[2, 0, 0, 0]]})
    assert answer.status == 200
    assert answer.json() == {"predictions": [[2.0]]}


async def test_named_inputs_in_rows_and_columns(http: Client) -> None:
    rows = await http.post("/v1/models/mixed:predict", {"instances": [{"a": [1, 2, 3], "b": 4}, {"a": [5, 6, 7], "b": 1}]})
    assert rows.status == 200
    assert rows.json() == {"predictions": [{"label": "5.0", "total": 5.0}, {"label": "6.0", "total": 6.0}]}
    columns = await http.post("/v1/models/mixed:predict", {"inputs": {"a": [[1, 2, 3]], "b": [4]}})
    assert columns.status == 200
    assert columns.json() == {"outputs": {"label": ["5.0"], "total": [5.0]}}


async def test_binary_strings_travel_as_b64(http: Client) -> None:
    answer = await http.post("/v1/models/echo:predict", {"instances": [{"b64": base64.b64encode(b"\xff\x00").decode()},
                                                                      "text"]})
    assert answer.status == 200
    encoded = {"b64": base64.b64encode(b"0.0").decode()}  # an output named *_bytes is written as b64
    assert answer.json() == {"predictions": [encoded, encoded]}


async def test_model_status_and_metadata(http: Client) -> None:
    status = await http.get("/v1/models/syn")
    assert status.json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert (await http.get("/v1/models/syn/versions/1")).json() == status.json()
    assert (await http.get("/v1/models/syn/labels/stable")).json() == status.json()
    metadata = (await http.get("/v1/models/syn/metadata")).json()
    assert metadata["model_spec"] == {"name": "syn", "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["features"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["total"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""},
                                                                    {"size": "1", "name": ""}]
    broken = (await http.get("/v1/models/broken")).json()["model_version_status"]
    assert [(v["state"], v["status"]["error_code"]) for v in broken] == [("END", "INVALID_ARGUMENT")]
    assert "unknown key 'no_such_key'" in broken[0]["status"]["error_message"]
    assert (await http.get("/v1/models/nope")).status == 404
