"""The TF Serving REST API against a real server: bodies shaped exactly as TF Serving's."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from ..reference import direct

SPAM_TEXTS = ["win a free iphone now", "lunch at noon with the team", "claim your gift card today"]


@pytest.fixture(scope="module")
def http(demo_server):
    with httpx.Client(base_url=demo_server.url, timeout=30) as client:
        yield client


def test_predict_row_format_strings_equals_direct_call(http, demo_repository):
    response = http.post("/v1/models/spam:predict", json={"instances": SPAM_TEXTS})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = direct(demo_repository / "spam" / "1", text=np.array(SPAM_TEXTS, dtype=object))
    assert [p["label"] for p in predictions] == [v.decode() for v in expected["label"]]
    np.testing.assert_allclose([p["spam_probability"] for p in predictions], expected["spam_probability"], rtol=1e-6)


def test_predict_columnar_format(http, demo_repository):
    response = http.post("/v1/models/spam:predict", json={"inputs": {"text": SPAM_TEXTS[:2]}})
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert set(outputs) == {"label", "spam_probability"}
    assert outputs["label"] == ["spam", "ham"]


def test_predict_b64_strings(http):
    encoded = [{"b64": base64.b64encode(t.encode()).decode()} for t in SPAM_TEXTS]
    plain = http.post("/v1/models/spam:predict", json={"instances": SPAM_TEXTS}).json()
    b64 = http.post("/v1/models/spam:predict", json={"instances": encoded}).json()
    assert b64 == plain


def test_predict_named_instances_and_versions_route(http, demo_repository):
    rows = np.random.default_rng(0).standard_normal((3, 32)).astype(np.float32)
    response = http.post("/v1/models/tabular/versions/1:predict",
                         json={"signature_name": "serving_default", "instances": [{"features": r.tolist()} for r in rows]})
    assert response.status_code == 200, response.text
    expected = direct(demo_repository / "tabular" / "1", features=rows)["score"]
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-5, atol=1e-6)


def test_predict_image_float_rows(http, demo_repository):
    images = np.random.default_rng(1).random((2, 96, 96, 3), dtype=np.float32)
    response = http.post("/v1/models/image_classifier:predict", json={"instances": images.tolist()})
    assert response.status_code == 200, response.text
    expected = direct(demo_repository / "image_classifier" / "1", image=images)["probabilities"]
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-4, atol=1e-6)


def test_integer_json_values_are_accepted_for_float_inputs(http):
    response = http.post("/v1/models/tabular:predict", json={"instances": [[1] * 32]})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_nan_and_infinity_are_read_and_written_like_tf_serving(http):
    body = '{"instances": [[NaN, Infinity, -Infinity, 1.5]]}'
    response = http.post("/v1/models/scale:predict", content=body)
    assert response.status_code == 200, response.text
    assert response.text == '{"predictions": [[NaN, Infinity, -Infinity, 3.0]]}'.replace(" ", "")


def test_two_inputs_two_outputs_row_and_columnar(http, demo_repository):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([10, 20], dtype=np.int32)
    expected = direct(demo_repository / "two_io" / "1", a=a, b=b)
    rows = http.post("/v1/models/two_io:predict",
                     json={"instances": [{"a": a[i].tolist(), "b": int(b[i])} for i in range(2)]}).json()
    assert rows == {"predictions": [{"doubled": int(expected["doubled"][i]), "total": float(expected["total"][i])}
                                    for i in range(2)]}
    columns = http.post("/v1/models/two_io:predict", json={"inputs": {"a": a.tolist(), "b": b.tolist()}}).json()
    assert columns == {"outputs": {"doubled": [20, 40], "total": [13.0, 32.0]}}


def test_model_status(http):
    body = http.get("/v1/models/spam").json()
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert http.get("/v1/models/spam/versions/1").status_code == 200


def test_model_metadata(http):
    body = http.get("/v1/models/image_classifier/metadata").json()
    assert body["model_spec"] == {"name": "image_classifier", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "96", "96", "3"]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "model 'nope' is not in the repository"),
        ("/v1/models/spam/versions/7:predict", {"instances": ["x"]}, 404, "has no version 7"),
        ("/v1/models/spam/labels/stable:predict", {"instances": ["x"]}, 404, "no version label 'stable'"),
        ("/v1/models/spam:predict", {"instances": []}, 400, "non-empty list"),
        ("/v1/models/spam:predict", {"nothing": 1}, 400, "exactly one of 'instances'"),
        ("/v1/models/spam:predict", {"instances": [1, 2]}, 400, "input 'text'"),
        ("/v1/models/tabular:predict", {"instances": [[1.0] * 31]}, 400, "dimension 1 must be 32"),
        ("/v1/models/tabular:predict", {"instances": [[1.0] * 32, [1.0] * 30]}, 400, "regular"),
        ("/v1/models/tabular:predict", {"instances": [["a"] * 32]}, 400, "input 'features'"),
        ("/v1/models/tabular:predict", {"signature_name": "other", "instances": [[1.0] * 32]}, 400,
         "signature 'other' is not served"),
        ("/v1/models/tabular:predict", {"inputs": {"features": [[1.0] * 32], "extra": [1]}}, 400,
         "unknown input 'extra'"),
    ],
)
def test_errors_are_tf_serving_shaped(http, path, body, status, fragment):
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_malformed_json_is_400(http):
    response = http.post("/v1/models/spam:predict", content=b"{not json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
