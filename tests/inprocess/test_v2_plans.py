"""V2 binary requests that repeat a JSON header (server/http/kserve_plans.py): decoded by the header's plan,
answered with a header made once, and answering and failing exactly as the general path does."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

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
    """How many bodies the general V2 decoder decodes (a plan is made from one, outside this count)."""
    calls: list[int] = []
    decode = kserve.decode_request

    def counted(body: bytes, header_length: int | None = None) -> Any:
        calls.append(1)
        return decode(body, header_length)

    monkeypatch.setattr(kserve, "decode_request", counted)
    return calls


async def test_a_repeated_header_is_answered_by_its_plan_as_the_general_path_answers(
        http: Client, general_decodes: list[int]) -> None:
    answers = []
    for values in ([1.0], [2.5], [-7.0], [4.0]):
        body, headers = _features(values, timeout=5_000_000, priority=1)
        answer = await http.post(INFER, body, headers)
        assert answer.status == 200, answer.content
        answers.append(split_binary(answer))
    assert general_decodes == []  # the first made the plan; none took the general decoder
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
        request = InferRequest("v2", "syn", None, None, kserve.CODEC)
        assert plans.decode(request, mv, body, int(headers["Inference-Header-Content-Length"]))
        assert request.inputs is not None and request.inputs["features"][:, 0].tolist() == [float(value)] * (value + 1)
        kept.append(len(plans._plans))
    assert kept == [1, 2, 3, 1, 2, 3, 1, 2, 3, 1]
