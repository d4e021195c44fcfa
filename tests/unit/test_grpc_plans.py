"""ModelInfer's plans (server/grpc/plans.py): a request matches a plan only when its bytes are the plan's
header and raw framing; the lean answer is byte for byte upb's serialization of the general path's message;
anything the lean path does not take goes to the general path; the cache stays bounded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from batching import BatchConfig
from server.core.vocabulary import Signature, TensorSpec
from server.grpc import plans as plans_module
from server.grpc import protos
from server.grpc.plans import GENERAL, Planned, Plans
from server.grpc.server import _bytes_or, _parser
from server.grpc.tensors import v2_inputs, v2_response

Request = protos.message("inference.ModelInferRequest")
Response = protos.message("inference.ModelInferResponse")
parse = Request.FromString


def _request(arrays: dict[str, np.ndarray], *, id: str = "", outputs: tuple[str, ...] = (),
             timeout: int | None = 5_000_000, priority: int | None = None, model: str = "m") -> bytes:
    request = Request(model_name=model, id=id)
    if timeout is not None:
        request.parameters["timeout"].int64_param = timeout
    if priority is not None:
        request.parameters["priority"].int64_param = priority
    for name, arr in arrays.items():
        datatype = {"float32": "FP32", "int64": "INT64", "float16": "FP16", "uint8": "UINT8"}[arr.dtype.name]
        request.inputs.add(name=name, datatype=datatype, shape=arr.shape)
        request.raw_input_contents.append(arr.tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request.SerializeToString()  # type: ignore[no-any-return]


def _model(inputs: dict[str, tuple[str, tuple[int, ...]]], outputs: dict[str, tuple[str, tuple[int, ...]]],
           levels: int = 2) -> Any:
    def specs(table: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, TensorSpec]:
        return {name: TensorSpec(name, np.dtype(dtype), shape) for name, (dtype, shape) in table.items()}

    return SimpleNamespace(name="m", version=3, signature=Signature("serving_default", specs(inputs), specs(outputs)),
                           batch_config=BatchConfig(priority_levels=levels), batcher=None)




def test_a_repeated_header_matches_with_its_own_raw_contents() -> None:
    plans = Plans()
    first = _request({"x": np.zeros((2, 4), np.float32)})
    made = plans.make(first, parse)
    assert isinstance(made, Planned) and made.plan.name == "m" and made.plan.version is None
    values = np.arange(8, dtype=np.float32).reshape(2, 4)
    again = plans.find(_request({"x": values}))
    assert isinstance(again, Planned) and again.plan is made.plan
    assert bytes(again.raw[0]) == values.tobytes()
    # same size, another header (an id of the same length): no match
    assert plans.find(_request({"x": values}, id="a")) is None
    # same header bytes, other framing at the same size cannot happen unless the bytes differ: they do not match
    tampered = bytearray(first)
    tampered[len(made.plan.header)] ^= 0x01
    assert plans.find(bytes(tampered)) is None


def test_two_inputs_and_an_int64_one() -> None:
    plans = Plans()
    arrays = {"a": np.ones((1, 3), np.float32), "b": np.arange(5, dtype=np.int64).reshape(1, 5)}
    made = plans.make(_request(arrays), parse)
    assert isinstance(made, Planned)
    for name, arr in zip(arrays, made.raw):
        assert bytes(arr) == arrays[name].tobytes()
    found = plans.find(_request(arrays))
    assert isinstance(found, Planned) and len(found.raw) == 2


@pytest.mark.parametrize("change", ["bytes", "typed", "duplicate", "size"])
def test_what_the_lean_path_does_not_take_is_parsed_as_before(change: str) -> None:
    plans = Plans()
    request = parse(_request({"x": np.zeros((1, 4), np.float32)}))
    if change == "bytes":
        request.inputs[0].datatype = "BYTES"
    elif change == "typed":  # no raw contents at all
        request.ClearField("raw_input_contents")
        request.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    elif change == "duplicate":
        request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(b"\0" * 16)
    else:
        request.raw_input_contents[0] = b"\0" * 12
    data = request.SerializeToString()
    assert plans.make(data, parse) is None
    assert plans.find(data) in (GENERAL, None)
    if change == "typed":
        plans.make(data, parse)
        assert not plans.wants(len(data))  # twice without raw contents last: no more looks at this size


def test_the_cache_is_bounded_when_every_request_has_its_own_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plans_module, "MAX_PLANS", 16)
    plans = Plans()
    arr = np.zeros((1, 4), np.float32)
    for index in range(1000):
        data = _request({"x": arr}, id=f"{index:06d}")
        assert plans.find(data) is None
        if plans.wants(len(data)):
            plans.make(data, parse)
        assert plans._count <= 16
        assert len(plans._by_size[len(data)]) <= plans_module.PLANS_PER_SIZE
    hot = _request({"x": arr}, id="hot-00")  # a header that repeats still gets a plan among them
    for _ in range(plans_module.REPLACE_EVERY * 2):
        if not isinstance(plans.find(hot), Planned) and plans.wants(len(hot)):
            plans.make(hot, parse)
    assert isinstance(plans.find(hot), Planned)


def _general_answer(data: bytes, mv: Any, outputs: dict[str, np.ndarray]) -> bytes:
    request = parse(data)
    wanted = [o.name for o in request.outputs] or None
    response = Response(model_name=mv.name, model_version=str(mv.version), id=request.id)
    v2_response(response, outputs, wanted or outputs, True)
    return response.SerializeToString()  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", ["one", "id", "wanted", "repeated", "dtypes", "scalar", "empty", "large"])
def test_the_lean_answer_is_upbs_serialization_of_the_general_one(case: str) -> None:
    mv = _model({"x": ("float32", (-1, 4))}, {"y": ("float32", (-1, 1)), "z": ("int64", (-1, 2)),
                                              "h": ("float16", (-1,)), "u": ("uint8", (-1, 3))})
    outputs = {"y": np.arange(2, dtype=np.float32).reshape(2, 1), "z": np.arange(4, dtype=np.int64).reshape(2, 2),
               "h": np.ones(2, np.float16), "u": np.full((2, 3), 7, np.uint8)}
    kwargs: dict[str, Any] = {}
    if case == "id":
        kwargs["id"] = "request-1"
    elif case == "wanted":
        kwargs["outputs"] = ("z", "y")
    elif case == "repeated":
        kwargs["outputs"] = ("y", "y")
    elif case == "scalar":
        outputs = {"y": np.array(2.5, np.float32)}
    elif case == "empty":
        outputs = {"y": np.zeros((0, 1), np.float32), "z": np.zeros((2, 0), np.int64)}
    elif case == "large":
        outputs = {"y": np.ones((2, 300_000), np.float32)}
    data = _request({"x": np.zeros((2, 4), np.float32)}, **kwargs)
    made = Plans().make(data, parse)
    assert isinstance(made, Planned)
    checked = made.plan.check(mv, made.raw)
    assert checked is not None
    for _ in range(2):  # the second time from the cached tensor headers
        assert checked.answer(outputs) == _general_answer(data, mv, outputs)
    assert Response.FromString(checked.answer(outputs)).model_version == "3"


def test_answers_the_lean_path_does_not_write_are_left_to_the_message() -> None:
    mv = _model({"x": ("float32", (-1, 4))}, {"s": ("object", (-1,)), "b": (">f4", (-1,))})
    made = Plans().make(_request({"x": np.zeros((2, 4), np.float32)}), parse)
    assert isinstance(made, Planned)
    checked = made.plan.check(mv, made.raw)
    assert checked is not None
    assert checked.answer({"s": np.array([b"a", b"b"], dtype=object)}) is None
    assert checked.answer({"b": np.ones(2, np.dtype(">f4"))}) is None


def test_inputs_come_in_the_signatures_order_as_validation_returns_them() -> None:
    mv = _model({"b": ("int64", (-1, 5)), "a": ("float32", (-1, 3))}, {"y": ("float32", (-1,))})
    arrays = {"a": np.ones((1, 3), np.float32), "b": np.arange(5, dtype=np.int64).reshape(1, 5)}
    data = _request(arrays)
    made = Plans().make(data, parse)
    assert isinstance(made, Planned)
    checked = made.plan.check(mv, made.raw)
    assert checked is not None
    inputs = checked.inputs(made.raw)
    assert list(inputs) == ["b", "a"]
    general = v2_inputs(parse(data))
    for name in arrays:
        np.testing.assert_array_equal(inputs[name], general[name])
        assert inputs[name].dtype == general[name].dtype and inputs[name].shape == general[name].shape
    assert checked.timeout == 5.0 and checked.priority == 0


@pytest.mark.parametrize("case", ["shape", "dtype", "missing", "output", "priority", "timeout", "no_batching"])
def test_a_header_that_fails_a_check_goes_to_the_general_path(case: str) -> None:
    mv = _model({"x": ("float32", (-1, 4))}, {"y": ("float32", (-1, 1))})
    arrays: dict[str, np.ndarray] = {"x": np.zeros((2, 4), np.float32)}
    kwargs: dict[str, Any] = {}
    if case == "shape":
        arrays = {"x": np.zeros((2, 5), np.float32)}
    elif case == "dtype":
        arrays = {"x": np.zeros((2, 4), np.int64)}
    elif case == "missing":
        arrays = {"w": np.zeros((2, 4), np.float32)}
    elif case == "output":
        kwargs["outputs"] = ("nope",)
    elif case == "priority":
        kwargs["priority"] = 5
    elif case == "timeout":
        kwargs["timeout"] = -1
    else:
        mv.batch_config = None
    made = Plans().make(_request(arrays, **kwargs), parse)
    assert isinstance(made, Planned)
    assert made.plan.check(mv, made.raw) is None
    assert made.plan.check(mv, made.raw) is None


def test_a_plan_is_checked_again_for_another_model_version() -> None:
    made = Plans().make(_request({"x": np.zeros((2, 4), np.float32)}), parse)
    assert isinstance(made, Planned)
    good = _model({"x": ("float32", (-1, 4))}, {"y": ("float32", (-1, 1))})
    bad = _model({"x": ("float32", (-1, 5))}, {"y": ("float32", (-1, 1))})
    assert made.plan.check(good, made.raw) is not None
    assert made.plan.check(bad, made.raw) is None
    again = made.plan.check(good, made.raw)
    assert again is not None and again.mv is good


def test_the_deserializer_uses_plans_and_the_serializer_passes_bytes_through() -> None:
    deserialize = _parser(Request)
    data = _request({"x": np.zeros((1, 4), np.float32)})
    first, second = deserialize(data), deserialize(data)
    assert isinstance(first, Planned) and isinstance(second, Planned) and first.plan is second.plan
    serialize = _bytes_or(Response.SerializeToString)
    assert serialize(b"\x0a\x01m") == b"\x0a\x01m"
    assert serialize(Response(model_name="m")) == b"\x0a\x01m"
