"""The protobuf messages of both gRPC APIs, from descriptors embedded in this package, in a private pool.

The interface files are in ``proto/`` (sources and licences in ``proto/README.md``):

- KServe V2 / Triton ``inference.GRPCInferenceService``: Triton's ``grpc_service.proto`` and
  ``model_config.proto`` (BSD-3-Clause, NVIDIA), as published;
- TF Serving ``tensorflow.serving.PredictionService`` and ``ModelService``: ``tensorflow_serving/apis`` and
  ``tensorflow_serving/config`` files (Apache-2.0, Google), as published, and the TensorFlow messages they
  use (tensors, dtypes, shapes, examples, error codes, ``SignatureDef``), written here wire-compatible
  with TensorFlow's (same names and numbers);
- TF Serving's ``tensorflow.serving.PredictionLog`` (``prediction_log.proto``, as published): the records of a
  SavedModel's warm-up file, read by ``server/runtime/warmup_records.py``.

``descriptors.binpb`` (package data) holds them compiled: a serialized ``FileDescriptorSet``, written by
``tests/protos_tool.py``. So nothing is generated at run time and no other package's files are read: serving
both APIs needs only ``protobuf`` (4.21 and later; no generated ``*_pb2`` modules, so no protobuf version
checks). A private pool cannot clash with the same files registered by TensorFlow, ``tritonclient`` or
``tensorflow-serving-api`` in the process's default pool, and classes built from it parse and serialize like
generated ones.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = ["KSERVE_SERVICE", "MODEL_SERVICE", "PREDICTION_SERVICE", "SERVICES", "add_module", "build_pool", "files",
           "message", "pool"]

KSERVE_SERVICE = "inference.GRPCInferenceService"
PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
SERVICES = (KSERVE_SERVICE, PREDICTION_SERVICE, MODEL_SERVICE)
"""Every service the embedded descriptors define, all of them served."""


def files() -> list[descriptor_pb2.FileDescriptorProto]:
    """The embedded files, each after the files it imports."""
    data = resources.files(__name__).joinpath("descriptors.binpb").read_bytes()
    return list(descriptor_pb2.FileDescriptorSet.FromString(data).file)


def build_pool() -> descriptor_pool.DescriptorPool:
    """A new pool holding the embedded files."""
    built = descriptor_pool.DescriptorPool()
    for proto in files():
        built.Add(proto)
    return built


_pool = build_pool()


def pool() -> descriptor_pool.DescriptorPool:
    """The private pool: every one of SERVICES, and what add_module adds."""
    return _pool


def _message_class(descriptor: Any) -> Any:
    make = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if make is not None:
        return make(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


@functools.cache
def message(full_name: str) -> Any:
    """The message class of ``full_name`` (e.g. ``inference.ModelInferRequest``), from the private pool."""
    return _message_class(_pool.FindMessageTypeByName(full_name))


def add_module(module: Any) -> None:
    """Add an imported generated module's file (health, reflection) so reflection can describe it too."""
    name = module.DESCRIPTOR.name
    try:
        _pool.FindFileByName(name)
    except KeyError:
        _pool.Add(descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb))
