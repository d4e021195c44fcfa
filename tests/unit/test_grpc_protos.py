"""The embedded gRPC descriptors (server/grpc/protos): compiled from the .proto files in proto/, with their
field names and numbers, the same as Triton's client package where it is installed, loaded without any
other package's files, and the same under every protobuf runtime's classes."""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from server.grpc import protos
from tests.protos_tool import PROTO_DIR, differences, recorded_sources

_TOKEN = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:[^"\\]|\\.)*"|[A-Za-z_][\w.]*|-?0[xX][0-9a-fA-F]+|-?\d+|\S', re.S)


def parse_proto(text: str) -> dict[str, dict[str, Any]]:
    """What a .proto file declares, read from its text: ``{full name: {field or value: number}}`` for its
    messages and enums, ``{full name: {method: (input, output)}}`` for its services."""
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith(("//", "/*"))]
    declared: dict[str, dict[str, Any]] = {}
    scopes: list[tuple[str, str]] = []  # (kind, full name)
    package = ""
    i = 0

    def skip_to(token: str) -> None:
        nonlocal i
        while tokens[i] != token:
            i += 1
        i += 1

    while i < len(tokens):
        token = tokens[i]
        kind, scope = scopes[-1] if scopes else ("file", package)
        if token == "package":
            package = tokens[i + 1]
            skip_to(";")
        elif token in ("syntax", "import", "option", "reserved", "extensions"):
            skip_to(";")
        elif token in ("message", "enum", "service"):
            name = f"{scope}.{tokens[i + 1]}" if scope else tokens[i + 1]
            declared[name] = {}
            scopes.append((token, name))
            skip_to("{")
        elif token == "oneof":
            scopes.append(("message", scope))
            skip_to("{")
        elif token == "}" or token == ";":
            if token == "}":
                scopes.pop()
            i += 1
        elif kind == "enum":
            declared[scope][token] = int(tokens[i + 2], 0)
            skip_to(";")
        elif kind == "service":
            assert token == "rpc", tokens[i:i + 5]
            start = i
            skip_to(")")
            request = tokens[i - 2]
            skip_to(")")
            declared[scope][tokens[start + 1]] = (request, tokens[i - 2])
            if tokens[i] == "{":
                skip_to("}")
        else:
            if token == "map":
                skip_to(">")
            elif token in ("repeated", "optional"):
                i += 2
            else:
                i += 1
            declared[scope][tokens[i]] = int(tokens[i + 2], 0)
            skip_to(";")
    return declared


def embedded_declarations(file: Any) -> dict[str, dict[str, Any]]:
    declared: dict[str, dict[str, Any]] = {}

    def add_message(prefix: str, message: Any) -> None:
        name = f"{prefix}.{message.name}"
        if not message.options.map_entry:
            declared[name] = {f.name: f.number for f in message.field}
        for nested in message.nested_type:
            add_message(name, nested)
        for enum in message.enum_type:
            declared[f"{name}.{enum.name}"] = {v.name: v.number for v in enum.value}

    for message in file.message_type:
        add_message(file.package, message)
    for enum in file.enum_type:
        declared[f"{file.package}.{enum.name}"] = {v.name: v.number for v in enum.value}
    for service in file.service:
        declared[f"{file.package}.{service.name}"] = {
            m.name: (m.input_type.lstrip(".").rpartition(".")[2], m.output_type.lstrip(".").rpartition(".")[2])
            for m in service.method}
    return declared


def own_files() -> list[Any]:
    return [f for f in protos.files() if not f.name.startswith("google/protobuf/")]


def test_the_descriptors_are_the_proto_files_compiled() -> None:
    on_disk = {p.relative_to(PROTO_DIR).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in PROTO_DIR.rglob("*.proto")}
    assert on_disk == recorded_sources(), "proto/ changed: run python tests/protos_tool.py"
    assert sorted(f.name for f in own_files()) == sorted(on_disk)


@pytest.mark.parametrize("name", sorted(recorded_sources()))
def test_field_names_and_numbers_are_those_of_the_proto_file(name: str) -> None:
    [file] = [f for f in own_files() if f.name == name]
    expected = parse_proto((PROTO_DIR / name).read_text())
    for full_name, declared in expected.items():  # a service's types as written: short or qualified
        if file.service and full_name.rpartition(".")[2] in {s.name for s in file.service}:
            expected[full_name] = {m: tuple(t.rpartition(".")[2] for t in io) for m, io in declared.items()}
    assert embedded_declarations(file) == expected


def test_the_served_services_and_what_their_handlers_use() -> None:
    pool = protos.pool()
    assert protos.SERVICES == ("inference.GRPCInferenceService", "tensorflow.serving.PredictionService",
                               "tensorflow.serving.ModelService")
    methods = {s: [m.name for m in pool.FindServiceByName(s).methods] for s in protos.SERVICES}
    assert methods["tensorflow.serving.PredictionService"] == ["Classify", "Regress", "Predict", "MultiInference",
                                                               "GetModelMetadata"]
    assert methods["tensorflow.serving.ModelService"] == ["GetModelStatus", "HandleReloadConfigRequest"]
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
            "ModelStreamInfer", "ModelConfig", "RepositoryIndex", "RepositoryModelLoad",
            "RepositoryModelUnload"} <= set(methods["inference.GRPCInferenceService"])

    def fields(name: str) -> dict[str, int]:
        return {f.name: f.number for f in pool.FindMessageTypeByName(name).fields}

    # the wire interface the clients depend on (Triton's and TF Serving's published numbers)
    assert fields("inference.ModelInferRequest") == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                                                     "inputs": 5, "outputs": 6, "raw_input_contents": 7}
    assert fields("inference.ModelInferResponse") == {"model_name": 1, "model_version": 2, "id": 3, "parameters": 4,
                                                      "outputs": 5, "raw_output_contents": 6}
    assert fields("inference.InferParameter") == {"bool_param": 1, "int64_param": 2, "string_param": 3,
                                                  "double_param": 4, "uint64_param": 5}
    assert fields("tensorflow.serving.ModelSpec") == {"name": 1, "version": 2, "version_label": 4,
                                                      "signature_name": 3}
    assert {k: v for k, v in fields("tensorflow.serving.PredictRequest").items() if v <= 2} == {
        "model_spec": 1, "inputs": 2}
    assert fields("tensorflow.serving.PredictResponse") == {"model_spec": 2, "outputs": 1}
    assert fields("tensorflow.TensorProto") == {
        "dtype": 1, "tensor_shape": 2, "version_number": 3, "tensor_content": 4, "half_val": 13, "float_val": 5,
        "double_val": 6, "int_val": 7, "string_val": 8, "scomplex_val": 9, "int64_val": 10, "bool_val": 11,
        "dcomplex_val": 12, "resource_handle_val": 14, "variant_val": 15, "uint32_val": 16, "uint64_val": 17,
        "float8_val": 18}
    assert fields("tensorflow.TensorInfo") == {"name": 1, "coo_sparse": 4, "dtype": 2, "tensor_shape": 3}
    assert fields("tensorflow.SignatureDef") == {"inputs": 1, "outputs": 2, "method_name": 3, "defaults": 4}
    assert fields("tensorflow.serving.GetModelMetadataResponse") == {"model_spec": 1, "metadata": 2}
    assert fields("tensorflow.serving.ModelVersionStatus") == {"version": 1, "state": 2, "status": 3}
    dtypes = {v.name: v.number for v in pool.FindEnumTypeByName("tensorflow.DataType").values}
    assert (dtypes["DT_FLOAT"], dtypes["DT_STRING"], dtypes["DT_HALF"], dtypes["DT_UINT64"]) == (1, 7, 19, 23)
    assert {v.name: v.number for v in pool.FindEnumTypeByName("tensorflow.error.Code").values}["NOT_FOUND"] == 5


def test_kserve_is_tritonclients_interface() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    triton = [f for f in protos.files() if f.package == "inference"]
    assert differences(triton, service_pb2.DESCRIPTOR.pool) == []
    ours = protos.message("inference.ModelInferRequest")(model_name="m", model_version="2", id="x")
    ours.inputs.add(name="a", datatype="FP32", shape=[1, 2])
    ours.parameters["timeout"].int64_param = 7
    ours.raw_input_contents.append(b"\x00" * 8)
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.SerializeToString(deterministic=True) == ours.SerializeToString(deterministic=True)
    assert (theirs.inputs[0].name, list(theirs.inputs[0].shape), theirs.parameters["timeout"].int64_param) == (
        "a", [1, 2], 7)


def test_differences_are_found() -> None:
    [model] = [f for f in own_files() if f.name == "tensorflow_serving/apis/model.proto"]
    changed = type(model).FromString(model.SerializeToString())
    changed.message_type[0].field[0].number = 9
    reference = protos.build_pool()
    assert differences([changed], reference) == [
        "tensorflow.serving.ModelSpec.name: ours (9, 9, 1, '', ''), reference (1, 9, 1, '', '')"]
    assert differences([model], reference) == []


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name.split(".")[0] in ("tritonclient", "tensorflow_serving", "tensorflow"):
            raise ImportError(f"loading the descriptors imported {name}")
        return None


def test_loading_needs_no_other_package(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(Path(protos.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name.split(".")[0] for name in imported} <= {"__future__", "functools", "importlib", "typing", "google"}
    monkeypatch.setattr(sys, "meta_path", [_Refuse(), *sys.meta_path])
    pool = protos.build_pool()
    for service in protos.SERVICES:
        for method in pool.FindServiceByName(service).methods:
            request = protos._message_class(method.input_type)
            assert request.FromString(request().SerializeToString()) == request()
