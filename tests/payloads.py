"""Request payloads shared by the tests, defined once: the synthetic model ``syn``'s V2 infer path and
bodies, V2 binary bodies, the KServe V2 gRPC request for ``syn``, and TF Serving gRPC messages and calls from
the server's embedded descriptors (``server.grpc.protos``: neither tensorflow-serving-api nor TensorFlow;
``protos.message(full_name)`` gives any of their classes).

``syn`` (tests/observe.py: ``synthetic_repository``; tests/harness.py: ``SYN``) takes ``features``
FP32 [-1, 4] and answers ``total`` FP32 [-1, 1]: each row's first value.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from server.grpc import protos

INFER = "/v2/models/syn/infer"
BAD_SHAPE = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
"""A V2 JSON infer body for ``syn`` with three features a row, not four: 400, "input 'features' expects shape
[-1, 4], got [1, 3] (dimension 1 must be 4)"."""


def row_body(value: float, rows: int = 1, timeout_us: int | None = None) -> dict[str, Any]:
    """A V2 JSON infer body for ``syn``: ``rows`` rows of ``value``; ``timeout_us``: ``parameters.timeout``."""
    body: dict[str, Any] = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 4],
                                         "data": [value] * (4 * rows)}]}
    if timeout_us is not None:
        body["parameters"] = {"timeout": timeout_us}
    return body


def binary_body(document: dict[str, Any], *chunks: bytes) -> tuple[bytes, dict[str, str]]:
    """A V2 body with the binary tensor extension: the JSON header, then ``chunks``; and its HTTP headers."""
    header = orjson.dumps(document)
    return header + b"".join(chunks), {"Inference-Header-Content-Length": str(len(header)),
                                       "Content-Type": "application/octet-stream"}


def split_binary(response: Any) -> tuple[dict[str, Any], bytes]:
    """A binary V2 answer (anything with ``content`` and ``headers``) as its JSON header and the bytes after it."""
    length = int(response.headers["inference-header-content-length"])
    return orjson.loads(response.content[:length]), response.content[length:]


def grpc_infer_request(value: float, rows: int = 1, timeout_us: int | None = None, model: str = "syn",
                       columns: int = 4) -> Any:
    """A KServe V2 ``ModelInferRequest`` (Triton's generated class) for ``syn``-shaped ``model``: ``rows`` rows
    of ``value`` as raw contents; ``timeout_us``: ``parameters.timeout``; ``columns`` other than 4: a bad shape."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="features", datatype="FP32", shape=[rows, columns])
    request.raw_input_contents.append(np.full((rows, columns), value, np.float32).tobytes())
    if timeout_us is not None:
        request.parameters["timeout"].int64_param = timeout_us
    return request


def grpc_totals(response: Any) -> list[float]:
    """``syn``'s output in a ``ModelInferResponse``: each row's first value."""
    return np.frombuffer(response.raw_output_contents[0], np.float32).tolist()


def tfs_dtype(name: str) -> int:
    """The number of the ``tensorflow.DataType`` named ``name`` (``DT_FLOAT``: 1)."""
    return int(protos.pool().FindEnumTypeByName("tensorflow.DataType").values_by_name[name].number)


_TF_DTYPES = {"float16": "DT_HALF", "float32": "DT_FLOAT", "float64": "DT_DOUBLE", "int8": "DT_INT8",
              "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64", "uint8": "DT_UINT8",
              "uint16": "DT_UINT16", "uint32": "DT_UINT32", "uint64": "DT_UINT64", "bool": "DT_BOOL",
              "complex64": "DT_COMPLEX64", "complex128": "DT_COMPLEX128"}


def tfs_tensor(value: Any) -> Any:
    """A ``tensorflow.TensorProto`` (embedded class): a numpy array packed as TensorFlow's ``make_tensor_proto``
    packs one (numbers as raw little-endian ``tensor_content``, bytes and strings as ``string_val``); a
    TensorProto of any class (TensorFlow's own too) copied by its wire bytes."""
    tensor_class = protos.message("tensorflow.TensorProto")
    if hasattr(value, "SerializeToString"):
        return tensor_class.FromString(value.SerializeToString())
    array = np.asarray(value)
    tensor = tensor_class()
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    if array.dtype.kind in "OSU":
        tensor.dtype = tfs_dtype("DT_STRING")
        tensor.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1))
    else:
        tensor.dtype = tfs_dtype(_TF_DTYPES[array.dtype.name])
        tensor.tensor_content = array.astype(array.dtype.newbyteorder("<")).tobytes()
    return tensor


def tfs_predict_request(model: str, version: int | None = None, label: str = "", signature: str = "",
                        **inputs: Any) -> Any:
    """A TF Serving ``PredictRequest`` (embedded class) for ``model``: ``version`` or ``label`` (one oneof in
    ``model_spec``), ``signature`` (empty: the default); each input a numpy array or a TensorProto (``tfs_tensor``)."""
    request = protos.message("tensorflow.serving.PredictRequest")()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tfs_tensor(value))
    return request


def grpc_method(channel: Any, service: str, method: str) -> Any:
    """The unary call ``/service/method`` on ``channel`` (``grpc`` or ``grpc.aio``), sending and parsing the
    embedded classes: e.g. ``grpc_method(channel, protos.PREDICTION_SERVICE, "Predict")(request, timeout=10)``."""
    descriptor = protos.pool().FindServiceByName(service).methods_by_name[method]
    return channel.unary_unary(f"/{service}/{method}",
                               request_serializer=protos.message(descriptor.input_type.full_name).SerializeToString,
                               response_deserializer=protos.message(descriptor.output_type.full_name).FromString)
