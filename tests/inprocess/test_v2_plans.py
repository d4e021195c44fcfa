"""V2 binary requests that repeat a JSON header (server/http/kserve_plans.py): decoded by the header's plan,
answered with a header made once, and answering and failing exactly as the general path does."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import numpy as np
import pytest

from server.codecs.v2_tensor import encode_bytes_tensor
from server.core.request import InferRequest
from server.http import kserve, kserve_plans

from ..harness import Client, Served
from ..payloads import INFER, binary_body, split_binary


def _features(values: list[float], **parameters: Any) -> tuple[bytes, dict[str, str]]:
    rows = np.array([[v, 1, 2, 3] for v in values], np.float32)
    document: dict[str, Any] = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(rows.shape),
                                            "parameters": {"binary_data_size": rows.nbytes}}],
                                "outputs": [{"name": "total", "parameters": {"binary_data": True}}]}
    if parameters:
        document["parameters"] = parameters
    return binary_body(document, rows.tobytes())


@pytest.fixture
def general_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many bodies the general V2 decoder decodes, for the general path and for making plans."""
    calls: list[int] = []
    decode = kserve.decode_request

    def counted(body: bytes, header_length: int | None = None) -> Any:
        calls.append(1)
        return decode(body, header_length)

    monkeypatch.setattr(kserve, "decode_request", counted)
    monkeypatch.setattr(kserve_plans, "decode_request", counted, raising=False)  # a plan is made from that decode
    monkeypatch.setattr(kserve.CODEC, "plans", kserve_plans.BinaryPlans())  # none kept from other tests
    return calls


async def test_a_repeated_header_is_answered_by_its_plan_as_the_general_path_answers(
        http: Client, general_decodes: list[int]) -> None:
    answers = []
    for values in ([1.0], [2.5], [-7.0], [4.0]):
        body, headers = _features(values, timeout=5_000_000, priority=1)
        answer = await http.post(INFER, body, headers)
        assert answer.status == 200, answer.content
        answers.append(split_binary(answer))
    assert general_decodes == [1]  # the first, once: its plan was made from that decode
    heads = {json.dumps(head) for head, _ in answers}
    assert heads == {json.dumps({"model_name": "syn", "model_version": "1", "outputs": [
        {"name": "total", "datatype": "FP32", "shape": [1, 1], "parameters": {"binary_data_size": 4}}]})}
    assert [np.frombuffer(data, np.float32).tolist() for _, data in answers] == [[1.0], [2.5], [-7.0], [4.0]]


async def test_a_planned_header_with_other_row_counts_and_outputs_is_its_own_plan(http: Client) -> None:
    for values in ([1.0, 2.0], [3.0, 4.0], [5.0, 6.0, 7.0]):
        answer = await http.post(INFER, *_features(values))
        head, data = split_binary(answer)
        assert head["outputs"][0]["shape"] == [len(values), 1]
        assert np.frombuffer(data, np.float32).tolist() == values


async def test_a_header_that_fails_its_check_fails_every_time_with_the_general_paths_error(
        http: Client, general_decodes: list[int]) -> None:
    rows = np.zeros((1, 3), np.float32)  # syn wants 4 features
    body, headers = binary_body({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3],
                                             "parameters": {"binary_data_size": rows.nbytes}}]}, rows.tobytes())
    for _ in range(3):
        answer = await http.post(INFER, body, headers)
        assert (answer.status, answer.json()) == (400, {
            "error": "input 'features' expects shape [-1, 4], got [1, 3] (dimension 1 must be 4)"})
    assert len(general_decodes) == 3


async def test_a_known_header_with_binary_data_of_another_length_is_refused_as_without_plans(http: Client) -> None:
    body, headers = _features([1.0])
    assert (await http.post(INFER, body, headers)).status == 200
    answer = await http.post(INFER, body + b"\0\0\0\0", headers)
    assert (answer.status, answer.json()) == (400, {"error": "4 bytes of binary data are not claimed by any input"})


async def test_a_plan_is_checked_again_for_each_model_version_it_meets(served: Served, http: Client) -> None:
    a = np.array([[1, 0, 0]], np.float32)
    b = np.array([5], np.int32)
    document = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}},
                           {"name": "b", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}}],
                "outputs": [{"name": "total", "parameters": {"binary_data": True}}]}
    body, headers = binary_body(document, a.tobytes(), b.tobytes())
    for _ in range(2):  # the same header to a model it fits and to one it does not, in turn
        fits = await http.post("/v2/models/mixed/infer", body, headers)
        assert np.frombuffer(split_binary(fits)[1], np.float32).tolist() == [6.0]
        refused = await http.post(INFER, body, headers)
        assert refused.status == 400 and refused.json()["error"].startswith("missing input 'features'")


async def test_a_header_with_an_id_or_json_data_is_decoded_by_the_general_path_each_time(
        http: Client, general_decodes: list[int]) -> None:
    rows = np.array([[2, 0, 0, 0]], np.float32)
    body, headers = binary_body({"id": "call-9", "inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "total", "parameters": {"binary_data": True}}]}, rows.tobytes())
    for _ in range(2):
        head, data = split_binary(await http.post(INFER, body, headers))
        assert head["id"] == "call-9" and np.frombuffer(data, np.float32).tolist() == [2.0]
    assert len(general_decodes) == 2


async def test_the_cache_of_plans_is_bounded(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kserve_plans, "MAX_PLANS", 3)
    plans = kserve_plans.BinaryPlans()
    mv = served.app.state.service.repository.get("syn", None)
    kept = []
    for value in range(10):  # ten headers: one more row each
        body, headers = _features([float(value)] * (value + 1))
        length = int(headers["Inference-Header-Content-Length"])
        first = InferRequest("v2", "syn", None, None, kserve.CODEC)
        assert plans.decode(first, mv, body, length, kserve.decode_request) is not None  # decoded: the plan made
        request = InferRequest("v2", "syn", None, None, kserve.CODEC)
        assert plans.decode(request, mv, body, length, kserve.decode_request) is None  # the plan's
        assert request.inputs is not None and request.inputs["features"][:, 0].tolist() == [float(value)] * (value + 1)
        kept.append(len(plans._plans))
    assert kept == [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]


def _texts(items: list[bytes], request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary V2 body for ``echo``: one BYTES input, its elements length-prefixed (its size in the header)."""
    raw = encode_bytes_tensor(np.array(items, dtype=object))
    document: dict[str, Any] = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(items)],
                                            "parameters": {"binary_data_size": len(raw)}}]}
    if request_id is not None:
        document["id"] = request_id
    return binary_body(document, raw)


async def _echoed(served: Served, http: Client, body: bytes, headers: dict[str, str]) -> list[bytes]:
    """What ``echo``'s batcher got for this body (it answers each element's length)."""
    puppet = await served.puppet("echo")
    answer = asyncio.ensure_future(http.post("/v2/models/echo/infer", body, headers))
    [submitted] = await puppet.submitted(1)
    got = list(submitted.inputs["text"])
    submitted.resolve({"label_bytes": np.array([b"%d" % len(item) for item in got], dtype=object)})
    response = await answer
    assert response.status == 200, response.content
    assert response.json()["outputs"][0]["data"] == [str(len(item)) for item in got]
    return got


async def test_bytes_inputs_of_changing_sizes_are_decoded_by_one_plan(
        served: Served, http: Client, general_decodes: list[int]) -> None:
    sent = [[b"\xff\xd8" + bytes(range(n % 256)) * 3, b"x" * n] for n in (7, 300, 12, 4100, 1)]
    for items in sent:  # each header differs from the last in its binary size only
        assert await _echoed(served, http, *_texts(items)) == items
    assert general_decodes == [1]  # the first made the plan; the others' sizes were read from their headers


async def test_bytes_that_do_not_fit_their_sizes_fail_with_the_general_paths_error(
        served: Served, http: Client, general_decodes: list[int]) -> None:
    body, headers = _texts([b"abc", b"de"])
    await _echoed(served, http, body, headers)  # the plan
    length = int(headers["Inference-Header-Content-Length"])
    runs_past = body[:length] + struct.pack("<I", 4) + b"abc" + struct.pack("<I", 2) + b"de"  # 3 bytes claimed as 4
    answer = await http.post("/v2/models/echo/infer", runs_past, headers)
    assert (answer.status, answer.json()) == (400, {"error": "input 'text': binary BYTES element 1 runs past the data"})
    short = _texts([b"abc", b"de"])[0][:-1]  # the size the header gives, one byte short
    answer = await http.post("/v2/models/echo/infer", short, headers)
    assert answer.status == 400 and "binary_data_size 13 does not fit the binary data" in answer.json()["error"]
    assert len(general_decodes) == 3


async def test_a_header_with_an_id_per_request_is_decoded_once_a_request(
        served: Served, http: Client, general_decodes: list[int]) -> None:
    for number in range(4):
        items = [b"call %d" % number]
        assert await _echoed(served, http, *_texts(items, request_id=f"call-{number}")) == items
    assert len(general_decodes) == 4  # no second decode to make a plan a header that changes cannot have


async def test_bytes_headers_written_as_pythons_json_writes_them_are_planned_too(
        served: Served, http: Client, general_decodes: list[int]) -> None:
    for items in ([b"first"], [b"second one"], [b"3"]):  # tritonclient's header: json.dumps, ": " between
        raw = encode_bytes_tensor(np.array(items, dtype=object))
        header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                                         "parameters": {"binary_data_size": len(raw)}}]}).encode()
        assert b'"binary_data_size": ' in header
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        assert await _echoed(served, http, header + raw, headers) == items
    assert general_decodes == [1]


async def test_a_short_body_under_a_large_planned_header_is_refused_without_making_its_elements(
        served: Served, http: Client, general_decodes: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    items = [b"x"] * 1000
    await _echoed(served, http, *_texts(items))  # the plan: 1,000 elements
    made: list[int] = []
    decode = kserve_plans.decode_bytes_tensor
    monkeypatch.setattr(kserve_plans, "decode_bytes_tensor", lambda *args: made.append(1) or decode(*args))
    header = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1000],
                                     "parameters": {"binary_data_size": 0}}]}, separators=(",", ":")).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    answer = await http.post("/v2/models/echo/infer", header, headers)
    assert (answer.status, answer.json()) == (400, {"error": "input 'text': binary BYTES data ends before element 0 "
                                                             "(shape [1000] needs at least 4000 bytes)"})
    assert made == [] and len(general_decodes) == 2


async def test_a_header_whose_sizes_are_not_only_its_inputs_is_never_planned_by_them(
        served: Served, http: Client, general_decodes: list[int]) -> None:
    """An input's size written in a form the plans do not read (a space before the colon), and a custom parameter
    of the same name and value: the parameter's number is not the input's size."""
    def body(item: bytes, custom: int) -> tuple[bytes, dict[str, str]]:
        header = (b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size" :9}}],'
                  b'"parameters":{"binary_data_size":%d}}' % custom)
        return header + struct.pack("<I", len(item)) + item, {
            "Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}

    assert await _echoed(served, http, *body(b"hello", 9)) == [b"hello"]  # 9 bytes: what the input's size says
    # 17 bytes where the input says 9: refused before the batcher (were it planned, the puppet would hold it)
    answer = await asyncio.wait_for(http.post("/v2/models/echo/infer", *body(b"hello, world!", 17)), 30)
    assert (answer.status, answer.json()) == (400, {"error": "input 'text': binary BYTES element 0 runs past the data"})
    assert len(general_decodes) == 2
