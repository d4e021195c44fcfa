"""The gRPC V2 hot path: raw inputs split off large requests without copies, and the lean raw-input path,
agree with upb's parse and the general path (values, and errors by falling back to it)."""

from __future__ import annotations

import numpy as np
import pytest

from server.codecs import CodecError
from server.grpc import protos
from server.grpc.server import _parser
from server.grpc.tensors import SPLIT_FROM_BYTES, SplitRequest, split_raw_contents, v2_inputs


def _request(arrays: dict[str, np.ndarray], **fields: object) -> object:
    request = protos.message("inference.ModelInferRequest")(model_name="m", id="x", **fields)
    request.parameters["timeout"].int64_param = 5_000_000
    for name, arr in arrays.items():
        request.inputs.add(name=name, datatype={"float32": "FP32", "int64": "INT64"}[arr.dtype.name], shape=arr.shape)
        request.raw_input_contents.append(arr.tobytes())
    return request


def test_split_raw_contents_are_views_of_the_wire_bytes() -> None:
    arrays = {"a": np.arange(12_000, dtype=np.float32).reshape(3, 4000), "b": np.arange(5, dtype=np.int64)}
    data = _request(arrays).SerializeToString()
    found = split_raw_contents(data)
    assert found is not None
    start, raw = found
    assert [bytes(r) for r in raw] == [a.tobytes() for a in arrays.values()]
    head = protos.message("inference.ModelInferRequest").FromString(data[:start])
    assert head.model_name == "m" and head.id == "x" and head.parameters["timeout"].int64_param == 5_000_000
    assert not head.raw_input_contents
    inputs = v2_inputs(head, raw)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(inputs[name], arr)


@pytest.mark.parametrize("data", [b"", b"\x0a\x01m", b"\x3a\xff", b"\x3a\x05abc", b"\x3a\x01a\x0a\x01m", b"\x3a\x01a\x08\x01",
                                  b"\x0f\x00", b"\x3a\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"])
def test_split_raw_contents_leaves_the_rest_to_upb(data: bytes) -> None:
    """No raw contents, a field after them, a truncated or odd message: None, and upb parses it whole."""
    assert split_raw_contents(data) is None


def test_the_deserializer_splits_only_large_infer_requests() -> None:
    """Requests the lean path does not take (here BYTES) are parsed as before: large ones split."""
    deserialize = _parser(protos.message("inference.ModelInferRequest"))
    small = _request({"a": np.zeros((1, 4), np.float32)})
    small.inputs[0].datatype = "BYTES"
    assert not isinstance(deserialize(small.SerializeToString()), SplitRequest)
    large = _request({"a": np.ones((1, SPLIT_FROM_BYTES // 4), np.float32)})
    large.inputs[0].datatype = "BYTES"
    for _ in range(2):  # the first makes a plan that says "general", the second matches it
        parsed = deserialize(large.SerializeToString())
        assert isinstance(parsed, SplitRequest) and parsed.message.model_name == "m"
        assert parsed.raw[0].nbytes == SPLIT_FROM_BYTES
    assert type(deserialize(b"\x3a\x05ab")).__name__ == "Malformed"


def test_the_lean_path_falls_back_for_errors() -> None:
    request = _request({"a": np.zeros((1, 4), np.float32)})
    request.raw_input_contents[0] = b"\0" * 12
    with pytest.raises(CodecError, match=r"input 'a': shape \[1, 4\] of FP32 needs 16 bytes, got 12"):
        v2_inputs(request)
    twice = _request({"a": np.zeros((1, 4), np.float32)})
    twice.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    twice.raw_input_contents.append(np.zeros(4, np.float32).tobytes())
    with pytest.raises(CodecError, match="appears twice"):
        v2_inputs(twice)
    negative = _request({"a": np.zeros((1, 4), np.float32)})
    negative.inputs[0].shape[0] = -1
    with pytest.raises(CodecError, match="non-negative"):
        v2_inputs(negative)
