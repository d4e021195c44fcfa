"""A real SavedModel with three signatures: every one served over one load (thread and process workers), chosen
per request over HTTP, and equal to the same signature called in-process; which ones model.yaml serves."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.models.config import ModelConfig
from server.runtime import ModelLoadError
from server.settings import Settings

from ..models import build_multi_signature_model
from ..pools import pool_for
from ..reference import call_signature, direct

X = np.random.default_rng(3).standard_normal((3, 4))  # float64: sent as a numpy client sends it (tolist())
IDS = np.array([5, 0, 2], np.int64)
TEXT = np.array([b"a", b"three", b"\xc3\xa9t\xc3\xa9"], dtype=object)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository holding ``multi`` version 1."""
    root = tmp_path_factory.mktemp("signatures")
    build_multi_signature_model(root / "multi" / "1")
    return root


@pytest.mark.parametrize("workers", ["thread", "process"])
async def test_each_signature_runs_as_called_in_process(multi: Path, workers: str) -> None:
    path = multi / "multi" / "1"
    pool = pool_for(path, settings=Settings(workers=workers, process_devices=1))
    await pool.start()
    try:
        assert list(pool.signatures) == ["serving_default", "embed", "length"]
        assert pool.signature.name == "serving_default"
        x = X.astype(np.float32)
        for signature, inputs in (("serving_default", {"x": x}), ("embed", {"ids": IDS}),
                                  ("length", {"text": TEXT})):
            got, expected = await pool.run(inputs, signature), call_signature(path, signature, inputs)
            assert set(got) == set(expected)
            for name, value in expected.items():
                np.testing.assert_array_equal(got[name], value)
        np.testing.assert_array_equal((await pool.run({"x": x}))["y"], direct(path, x=x)["y"])  # None: the default
    finally:
        await pool.close()


async def test_model_yaml_chooses_the_signatures_served_and_the_default(multi: Path) -> None:
    path = multi / "multi" / "1"
    pool = pool_for(path, ModelConfig(signatures=["length", "embed"]))
    await pool.start()
    try:  # serving_default is not served: the first listed is the default
        assert (list(pool.signatures), pool.signature.name) == (["length", "embed"], "length")
    finally:
        await pool.close()
    pool = pool_for(path, ModelConfig(signature_name="length"))
    await pool.start()
    try:
        assert (list(pool.signatures), pool.signature.name) == (["length", "embed", "serving_default"], "length")
    finally:
        await pool.close()
    with pytest.raises(ModelLoadError, match=r"has no signature 'classify'; it has \['embed', 'length', "):
        await pool_for(path, ModelConfig(signatures=["embed", "classify"])).start()
    with pytest.raises(ModelLoadError, match="signature_name 'length' is not among the signatures to serve"):
        await pool_for(path, ModelConfig(signature_name="length", signatures=["embed"])).start()


def test_a_server_answers_every_signature_over_http(start_server, multi: Path) -> None:
    server = start_server(multi, workers="process", process_devices=1, poll_interval=0)
    path = multi / "multi" / "1"
    with httpx.Client(base_url=server.url, timeout=30) as http:
        rows = http.post("/v1/models/multi:predict", json={"instances": X.tolist()})
        expected = direct(path, x=X.astype(np.float32))["y"]
        np.testing.assert_array_equal(np.array(rows.json()["predictions"], np.float32), expected)
        embed = http.post("/v1/models/multi:predict",
                          json={"signature_name": "embed", "inputs": {"ids": IDS.tolist()}})
        np.testing.assert_array_equal(np.array(embed.json()["outputs"], np.float32),
                                      call_signature(path, "embed", {"ids": IDS})["vector"])
        text = [{"b64": base64.b64encode(t).decode()} for t in TEXT]
        length = http.post("/v1/models/multi/versions/1:predict",
                           json={"signature_name": "length", "instances": text})
        assert length.json() == {"predictions": call_signature(path, "length", {"text": TEXT})["chars"].tolist()}
        v2 = http.post("/v2/models/multi/infer", json={"parameters": {"signature_name": "embed"}, "inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [3], "data": IDS.tolist()}]})
        assert v2.status_code == 200, v2.text
        (output,) = v2.json()["outputs"]
        assert (output["name"], output["shape"]) == ("vector", [3, 4])
        np.testing.assert_array_equal(np.array(output["data"], np.float32).reshape(3, 4),
                                      call_signature(path, "embed", {"ids": IDS})["vector"])
        metadata = http.get("/v1/models/multi/metadata").json()["metadata"]["signature_def"]["signature_def"]
        assert list(metadata) == ["serving_default", "embed", "length"]
        assert metadata["length"]["inputs"]["text"]["dtype"] == "DT_STRING"
        refused = http.post("/v1/models/multi:predict", json={"signature_name": "classify", "instances": [1]})
        assert refused.status_code == 400
        assert refused.json()["error"] == ("signature 'classify' is not served for model 'multi'; "
                                           "served: ['serving_default', 'embed', 'length']")
