"""KServe V2 bodies round-trip through the one encoder (client, load generator) and the server's decoder."""

import re

import numpy as np
import orjson
import pytest

from server.codecs import CodecError
from server.codecs.v2 import V2Request, decode_request, decode_response, encode_request, encode_response
from server.codecs.v2_tensor import decode_bytes_tensor, encode_bytes_tensor

TENSORS = {
    "fp32": np.array([[1 / 3, -2.5e-7, 3.4e38], [0.1, 1e-45, -0.0]], dtype=np.float32),
    "int64": np.array([2**62 + 1, -(2**63), 7], dtype=np.int64),
    "bytes": np.array([[b"", "wörld".encode()], [b"x" * 300, b"\x00\x01"]], dtype=object),
}


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, arr in expected.items():
        assert got[name].dtype == arr.dtype and got[name].shape == arr.shape, name
        assert got[name].tolist() == arr.tolist(), name


@pytest.mark.parametrize("binary", [False, True])
def test_request_round_trip(binary):
    body, header_length = encode_request(TENSORS, binary, {"timeout": 5_000_000})
    assert (header_length is not None) == binary
    request = decode_request(body, header_length)
    assert_same(request.inputs, TENSORS)
    assert request.parameters == ({"timeout": 5_000_000, "binary_data_output": True} if binary
                                  else {"timeout": 5_000_000})
    assert request.binary_outputs == ({"*"} if binary else set())


def test_json_bytes_and_numpy_strings_round_trip_as_text():
    body, header_length = encode_request({"t": np.array(["ab", "c"]), "b": np.array([b"xy", "é".encode()])}, False)
    assert header_length is None
    entries = orjson.loads(body)["inputs"]
    assert [e["data"] for e in entries] == [["ab", "c"], ["xy", "é"]]
    assert [e["datatype"] for e in entries] == ["BYTES", "BYTES"]
    assert decode_request(body).inputs["b"].tolist() == [b"xy", "é".encode()]


def test_json_numbers_keep_full_precision():
    values = np.array([1 / 3, 0.1, 1e-300, np.nan, np.inf, -np.inf])
    body, _ = encode_request({"x": values}, False)
    got = decode_request(body).inputs["x"]
    np.testing.assert_array_equal(got, values)  # NaN/Infinity written as TF Serving writes them, not null
    body, _ = encode_request({"x": TENSORS["fp32"]}, False)
    assert np.array_equal(np.array(orjson.loads(body)["inputs"][0]["data"], np.float32), TENSORS["fp32"].reshape(-1))


@pytest.mark.parametrize("binary_outputs", [set(), {"*"}, {"bytes"}])
def test_response_round_trip(binary_outputs):
    request = V2Request(inputs={}, id="r-1", binary_outputs=binary_outputs)
    body, header_length = encode_response("m", "1", TENSORS, request)
    assert (header_length is not None) == bool(binary_outputs)
    got = decode_response(body, header_length)
    assert_same(got, TENSORS)


def test_bytes_packing_is_length_prefixed_little_endian():
    packed = encode_bytes_tensor(np.array([b"ab", "c"], dtype=object))
    assert packed == b"\x02\x00\x00\x00ab\x01\x00\x00\x00c"
    assert decode_bytes_tensor(memoryview(packed), 2, "t").tolist() == [b"ab", b"c"]
    with pytest.raises(CodecError, match="input 't': 5 bytes left over after 1 BYTES elements"):
        decode_bytes_tensor(memoryview(packed), 1, "t")


def _x(**entry):
    return {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", **entry}]}


def _binary(document, raw):
    header = orjson.dumps(document)
    return header + raw, len(header)


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b'{"inputs": []}', None, "request needs a non-empty 'inputs' list"),
        (b'{"inputs": [{"datatype": "FP32"}]}', None, "each input needs a 'name'"),
        (orjson.dumps({"inputs": _x(data=[1])["inputs"] * 2}), None, "input 'x' appears twice"),
        (orjson.dumps(_x(datatype="FP99", data=[1])), None, "input 'x': unknown datatype 'FP99'"),
        (orjson.dumps(_x(shape=[2], data=[1])), None, "input 'x': shape [2] needs 2 elements, data has 1"),
        (orjson.dumps(_x(shape=-1, data=[1])), None, "input 'x': 'shape' must be a list of non-negative integers"),
        (orjson.dumps(_x()), None, "input 'x' has neither 'data' nor parameters.binary_data_size"),
        (*_binary(_x(shape=[2], parameters={"binary_data_size": 4}), bytes(4)),
         "input 'x': shape [2] of FP32 needs 8 bytes, binary_data_size is 4"),
        (*_binary(_x(parameters={"binary_data_size": 8}), bytes(4)),
         "input 'x': binary_data_size 8 does not fit the binary data"),
        (*_binary(_x(datatype="BYTES", parameters={"binary_data_size": 3}), b"\x05\x00\x00"),
         "input 'x': binary BYTES data ends before element 0"),
        (*_binary(_x(data=[1]), b"xy"), "2 bytes of binary data are not claimed by any input"),
        (b"{}", 9, "Inference-Header-Content-Length 9 does not fit a 2-byte body"),
        (b"[1]", None, "request body must be a JSON object"),
        (orjson.dumps({**_x(data=[1]), "parameters": [1]}), None, "'parameters' must be an object"),
        (orjson.dumps({**_x(data=[1]), "outputs": ["y"]}), None, "'outputs' must be a list of objects with a 'name'"),
    ],
)
def test_request_errors_keep_their_messages(body, header_length, message):
    with pytest.raises(CodecError, match="^" + re.escape(message)):
        decode_request(body, header_length)
