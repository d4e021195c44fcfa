"""The model zoo (tests/zoo.py) served by one real server, each answer equal to what the same SavedModel answers
in-process, on every protocol: TF Serving REST rows and columns (httpx), KServe V2 JSON and binary
(tritonclient.http), KServe V2 gRPC (tritonclient.grpc) and TF Serving gRPC Predict (the server's embedded
descriptors, tensors packed by TensorFlow as a TF client packs them).

Each case sends three requests at once (1, 2 and 3 rows), answered from one batch (tests/zoo.py, ``MODEL_YAML``:
the tokens model's requests differ in length and are padded together), and compares each answer with the
SavedModel called in-process on exactly that request's inputs: integers, booleans and strings exactly, floats
exactly too except the outputs a model lists in ``approximate`` (tests/zoo.py says why for each).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from server.grpc import protos

from ..payloads import grpc_method, tfs_predict_request
from ..reference import call_signature
from ..servers import ServerProcess
from ..zoo import BATCH, ZOO, Inputs

tf = pytest.importorskip("tensorflow")
httpaio = pytest.importorskip("tritonclient.http.aio")
grpcaio = pytest.importorskip("tritonclient.grpc.aio")
from tritonclient.utils import np_to_triton_dtype  # noqa: E402

DEFAULT = "serving_default"
PROTOCOLS = ("tfs_rows", "tfs_columns", "v2_json", "v2_binary", "grpc_v2", "grpc_tfs")
NOT_CARRIED = {("jpeg_image", "v2_json")}
"""V2 JSON carries BYTES as text, so JPEG bytes (not UTF-8) travel only as binary data: in Triton too."""


CASES = [pytest.param(name, signature, protocol, id=f"{name}-{signature}-{protocol}")
         for name, model in ZOO.items() for signature in model.signatures for protocol in PROTOCOLS
         if (name, protocol) not in NOT_CARRIED]


@pytest.fixture(scope="module")
def zoo_server(zoo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the zoo, warm-up on as users run it, strictly ready (every zoo model loads: the JPEG one's
    generated warm-up is rejected, and it serves)."""
    server = ServerProcess(zoo_repository, tmp_path_factory.mktemp("logs") / "zoo_server.log", poll_interval=0)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


class Clients:
    """One client per protocol, on the test's event loop."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = httpx.AsyncClient(base_url=server.url, timeout=30)
        self.triton_http = httpaio.InferenceServerClient(server.url.removeprefix("http://"))
        self.triton_grpc = grpcaio.InferenceServerClient(server.grpc_target)
        self.channel = grpc.aio.insecure_channel(server.grpc_target)
        self.predict = grpc_method(self.channel, protos.PREDICTION_SERVICE, "Predict")

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.triton_http.close()
        await self.triton_grpc.close()
        await self.channel.close()

    async def call(self, protocol: str, model: str, signature: str, inputs: Inputs, outputs: list[str]) -> dict:
        """One request: ``model``'s answer on ``protocol``, by output name (arrays, or TF Serving's JSON values)."""
        if protocol.startswith("tfs_"):
            return await self._rest(model, signature, inputs, outputs, protocol == "tfs_rows")
        if protocol.startswith("v2_"):
            return await self._v2_http(model, signature, inputs, outputs, protocol == "v2_binary")
        if protocol == "grpc_v2":
            tensors = []
            for name, arr in inputs.items():
                tensors.append(grpcaio.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype)))
                tensors[-1].set_data_from_numpy(arr)
            result = await self.triton_grpc.infer(model, tensors, parameters=_v2_parameters(signature))
            return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}
        request = tfs_predict_request(model, signature=signature, **{n: tf.make_tensor_proto(a) for n, a in
                                                                     inputs.items()})
        response = await self.predict(request, timeout=30)
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

    async def _rest(self, model: str, signature: str, inputs: Inputs, outputs: list[str], rows: bool) -> dict:
        columns = {name: _json(arr) for name, arr in inputs.items()}
        body: dict[str, Any] = {} if signature == DEFAULT else {"signature_name": signature}
        if not rows:
            body["inputs"] = columns
        elif len(columns) == 1:
            body["instances"] = next(iter(columns.values()))
        else:
            body["instances"] = [dict(zip(columns, values)) for values in zip(*columns.values())]
        answer = await self.http.post(f"/v1/models/{model}:predict", json=body)
        assert answer.status_code == 200, answer.text
        document = answer.json()
        if not rows:
            return {outputs[0]: document["outputs"]} if len(outputs) == 1 else document["outputs"]
        predictions = document["predictions"]
        if len(outputs) == 1:
            return {outputs[0]: predictions}
        assert all(set(p) == set(predictions[0]) for p in predictions), predictions
        return {name: [p[name] for p in predictions] for name in predictions[0]}

    async def _v2_http(self, model: str, signature: str, inputs: Inputs, outputs: list[str], binary: bool) -> dict:
        tensors = []
        for name, arr in inputs.items():
            tensors.append(httpaio.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype)))
            tensors[-1].set_data_from_numpy(arr, binary_data=binary)
        wanted = [httpaio.InferRequestedOutput(name, binary_data=True) for name in outputs] if binary else None
        result = await self.triton_http.infer(model, tensors, outputs=wanted, parameters=_v2_parameters(signature))
        return {o["name"]: result.as_numpy(o["name"]) for o in result.get_response()["outputs"]}


def _v2_parameters(signature: str) -> dict[str, str] | None:
    return None if signature == DEFAULT else {"signature_name": signature}


def _json(arr: np.ndarray) -> Any:
    """A tensor as TF Serving's JSON: strings as text, bytes that are not UTF-8 as ``{"b64": ...}``."""
    if arr.dtype != object:
        return arr.tolist()

    def one(value: bytes) -> Any:
        try:
            return value.decode()
        except UnicodeDecodeError:
            return {"b64": base64.b64encode(value).decode()}

    return np.frompyfunc(one, 1, 1)(arr).tolist()


def _bytes(value: Any) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    return value.encode() if isinstance(value, str) else bytes(value)


_JSON_KIND = {"f": "f", "i": "i", "u": "i", "b": "b"}


def as_array(value: Any, want: np.dtype) -> np.ndarray:
    """An answer's tensor as numpy: a typed protocol's array as it came (strings as bytes); TF Serving's JSON
    values, which must be of the dtype's kind, in the signature's dtype (float32 round-trips its shortest text)."""
    if isinstance(value, np.ndarray) and value.dtype != object and value.dtype.kind not in "SU":
        return value
    if want.kind == "O":
        flat = np.array(value, dtype=object)
        return np.frompyfunc(_bytes, 1, 1)(flat) if flat.ndim else np.array(_bytes(flat.item()), dtype=object)
    raw = np.asarray(value)
    assert raw.dtype.kind == _JSON_KIND[want.kind], f"JSON values of kind {raw.dtype.kind!r} for a {want} output"
    cast = raw.astype(want)
    assert want.kind == "f" or (cast == raw).all(), f"{raw} does not fit {want}"
    return cast


def assert_same(got: Mapping[str, Any], want: Mapping[str, np.ndarray], approximate: Mapping[str, str]) -> None:
    assert sorted(got) == sorted(want)
    for name, expected in want.items():
        actual = as_array(got[name], expected.dtype)
        assert (actual.dtype, actual.shape) == (expected.dtype, expected.shape), name
        if name in approximate:  # tests/zoo.py says why the batch may differ in the last bits
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(actual, expected, err_msg=name, strict=True)


@pytest.fixture
async def clients(zoo_server: ServerProcess) -> AsyncIterator[Clients]:
    made = Clients(zoo_server)
    yield made
    await made.aclose()


@pytest.mark.parametrize(("name", "signature", "protocol"), CASES)
async def test_zoo_model_answers_as_in_process(clients: Clients, zoo_server: ServerProcess, zoo_repository: Path,
                                               name: str, signature: str, protocol: str) -> None:
    model = ZOO[name]
    requests = model.requests(signature)
    path = zoo_repository / name / "1"
    expected = [call_signature(path, signature, inputs) for inputs in requests]
    rows, batches = zoo_server.batch_totals(name)
    answers = await asyncio.gather(*(clients.call(protocol, name, signature, inputs, sorted(want))
                                     for inputs, want in zip(requests, expected)))
    for got, want in zip(answers, expected):
        assert_same(got, want, model.approximate)
    assert zoo_server.batch_totals(name) == (rows + BATCH, batches + 1)  # the three requests made one batch


_V2_DATATYPES = {"float32": "FP32", "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "bool": "BOOL",
                 "string": "BYTES"}


def _v2_tensors(specs: Mapping[str, Any]) -> list[dict[str, Any]]:
    return sorted(({"name": name, "datatype": _V2_DATATYPES[spec.dtype.name],
                    "shape": [-1 if d is None else d for d in spec.shape.as_list()]} for name, spec in specs.items()),
                  key=lambda t: t["name"])


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_model_is_ready_with_its_exported_signature(zoo_server: ServerProcess, zoo_repository: Path,
                                                        name: str) -> None:
    assert httpx.get(f"{zoo_server.url}/v2/models/{name}/ready").status_code == 200
    function = tf.saved_model.load(str(zoo_repository / name / "1")).signatures[DEFAULT]
    metadata = httpx.get(f"{zoo_server.url}/v2/models/{name}").json()
    assert sorted(metadata["inputs"], key=lambda t: t["name"]) == _v2_tensors(function.structured_input_signature[1])
    assert sorted(metadata["outputs"], key=lambda t: t["name"]) == _v2_tensors(function.structured_outputs)


def test_metadata_lists_every_signature(zoo_server: ServerProcess) -> None:
    metadata = httpx.get(f"{zoo_server.url}/v1/models/multi_signature/metadata").json()
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["embed", DEFAULT]
    assert signatures["embed"]["inputs"]["ids"]["dtype"] == "DT_INT64"
    assert sorted(signatures["embed"]["outputs"]) == ["embedding", "known"]
    assert sorted(signatures[DEFAULT]["outputs"]) == ["doubled", "largest"]
