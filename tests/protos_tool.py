"""Compile server/grpc/protos/proto/ into ``descriptors.binpb``, check it, and compare it with installed clients.

    python tests/protos_tool.py                      # rewrite descriptors.binpb and proto/SHA256SUMS from proto/
    python tests/protos_tool.py --check              # fail if descriptors.binpb is not proto/ compiled
    python tests/protos_tool.py --compare-installed  # against tritonclient, tensorflow-serving-api

A developer's tool, kept out of the package: serving only reads ``descriptors.binpb``. It imports nothing of
batchserve (it runs where batchserve's dependencies are not installed).

Compiling needs ``grpcio-tools`` (its bundled protoc; any Python environment that has it, e.g. a throwaway
virtual environment: ``pip install grpcio-tools``); serving never does. ``--compare-installed`` imports the
installed ``tritonclient.grpc`` and ``tensorflow_serving.apis`` modules (with TensorFlow) and reports every
field, enum value or method of the embedded messages that differs from theirs by name, number, type or label.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2

PACKAGE = Path(__file__).resolve().parent.parent / "server" / "grpc" / "protos"
PROTO_DIR = PACKAGE / "proto"
DESCRIPTORS = PACKAGE / "descriptors.binpb"
"""protoc's ``--descriptor_set_out``, as it wrote it: a serialized FileDescriptorSet, imports first."""
SUMS = PROTO_DIR / "SHA256SUMS"
"""The sha256 of each file under proto/ that DESCRIPTORS was compiled from (``sha256sum -c`` reads it)."""
ROOTS = ("grpc_service.proto", "tensorflow_serving/apis/prediction_service.proto",
         "tensorflow_serving/apis/model_service.proto", "tensorflow_serving/apis/prediction_log.proto")
"""The files that define the served services, and TF Serving's warm-up records (``PredictionLog``); protoc adds
everything they import."""

REFERENCE_MODULES = ("tritonclient.grpc.service_pb2", "tensorflow_serving.apis.prediction_service_pb2",
                     "tensorflow_serving.apis.model_service_pb2")


def sources() -> dict[str, str]:
    """Every .proto under proto/ with its sha256."""
    return {path.relative_to(PROTO_DIR).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(PROTO_DIR.rglob("*.proto"))}


def recorded_sources() -> dict[str, str]:
    """SUMS: the sha256 of each file under proto/ when DESCRIPTORS was compiled."""
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in SUMS.read_text().splitlines())}


def compile_protos() -> bytes:
    """proto/ compiled by grpcio-tools' protoc: a serialized FileDescriptorSet, imports first."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("compiling needs grpcio-tools: pip install grpcio-tools (any environment will do)") \
            from None
    include = Path(protoc.__file__).resolve().parent / "_proto"  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "set.bin"
        command = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"-I{include}", "--include_imports",
                   f"--descriptor_set_out={out}", *ROOTS]
        subprocess.run(command, check=True, cwd=PROTO_DIR)
        return out.read_bytes()


def _fields(message: Any) -> dict[str, tuple[Any, ...]]:
    return {f.name: (f.number, f.type, f.label, f.type_name.lstrip("."),
                     message.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else "")
            for f in message.field}


def _walk(prefix: str, messages: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    for message in messages:
        name = f"{prefix}.{message.name}" if prefix else message.name
        yield name, message
        yield from _walk(name, message.nested_type)


def differences(ours: Iterable[descriptor_pb2.FileDescriptorProto], reference: Any) -> list[str]:
    """How the messages, enums and services of ``ours`` differ from those of the same full names in the
    ``reference`` pool; a reference field whose number one of ours reserves is a deliberate omission."""
    found: list[str] = []
    for file in ours:
        if file.name.startswith("google/protobuf/"):
            continue
        enums = [(f"{file.package}.{e.name}", e) for e in file.enum_type]
        for name, message in _walk(file.package, file.message_type):
            enums += [(f"{name}.{e.name}", e) for e in message.enum_type]
            try:
                theirs = descriptor_pb2.DescriptorProto()
                reference.FindMessageTypeByName(name).CopyToProto(theirs)
            except KeyError:
                found.append(f"{name}: not in the reference")
                continue
            mine, other = _fields(message), _fields(theirs)
            reserved = [(r.start, r.end) for r in message.reserved_range]
            for field in sorted(mine.keys() | other.keys()):
                if mine.get(field) == other.get(field):
                    continue
                if field not in mine and any(start <= other[field][0] < end for start, end in reserved):
                    continue
                found.append(f"{name}.{field}: ours {mine.get(field)}, reference {other.get(field)}")
        for name, enum in enums:
            try:
                values = {v.name: v.number for v in reference.FindEnumTypeByName(name).values}
            except KeyError:
                found.append(f"{name}: not in the reference")
                continue
            if {v.name: v.number for v in enum.value} != values:
                found.append(f"{name}: values differ from the reference's")
        for service in file.service:
            name = f"{file.package}.{service.name}"
            try:
                other_methods = reference.FindServiceByName(name).methods
            except KeyError:
                found.append(f"{name}: not in the reference")
                continue
            if ({(m.name, m.input_type.lstrip("."), m.output_type.lstrip("."), m.client_streaming,
                  m.server_streaming) for m in service.method}
                    != {(m.name, m.input_type.full_name, m.output_type.full_name, m.client_streaming,
                         m.server_streaming) for m in other_methods}):
                found.append(f"{name}: methods differ from the reference's")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if descriptors.binpb is not proto/ compiled")
    mode.add_argument("--compare-installed", action="store_true",
                      help="compare the embedded descriptors with tritonclient's and tensorflow-serving-api's")
    args = parser.parse_args(argv)
    if args.compare_installed:
        from google.protobuf import descriptor_pool

        for module in REFERENCE_MODULES:
            importlib.import_module(module)
        embedded = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file
        found = differences(embedded, descriptor_pool.Default())
        print("\n".join(found) or "the embedded descriptors match the installed packages'")
        return 1 if found else 0
    compiled, hashes = compile_protos(), sources()
    if args.check:
        if (recorded_sources(), DESCRIPTORS.read_bytes()) != (hashes, compiled):
            print(f"{DESCRIPTORS.name} is not proto/ compiled: run python tests/protos_tool.py")
            return 1
        print(f"{DESCRIPTORS.name} is up to date")
        return 0
    DESCRIPTORS.write_bytes(compiled)
    SUMS.write_text("".join(f"{digest}  {name}\n" for name, digest in hashes.items()))
    print(f"wrote {DESCRIPTORS} ({len(compiled)} bytes, {len(hashes)} .proto files) and {SUMS.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
