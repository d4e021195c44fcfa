"""ModelInfer's hot path for requests that repeat: what the bytes before a request's raw contents say is
parsed, checked and encoded once, then reused while the same bytes come again.

A client sends the same ModelInferRequest header for every call of one shape (tritonclient: model, version,
inputs' names, datatypes and shapes, requested outputs, parameters; only the raw contents change). A
request whose bytes start with a known header, and whose raw contents follow it framed exactly as that
header's first request had them, is that header's message plus these raw contents: protobuf parses a
message field by field, so equal bytes parse to equal messages. Such a request skips upb's parse, the
input checks and the signature validation (done once per header and model version, on the first
request's arrays: they depend on names, datatypes and shapes, never on values), and its answer is
written as bytes (a ModelInferResponse's layout is fixed: name, version and id, then each output's
name, datatype and shape, then the raw contents), as upb would serialize it.

Anything the lean path does not cover (BYTES, typed contents, a header that fails a check, an output
that is not a fixed-size little-endian number) takes the general path, which names the error: a header
is used only while its checks pass for the model version that serves it, so a request answers and fails
exactly as without plans. Plans are kept per request size (a few each, a bounded number in all), so
clients that change their headers on every call (a request id each) cost a few byte comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from server.core.request import batcher_priority
from server.core.vocabulary import validate_inputs
from server.grpc.tensors import (
    _V2_OF_DTYPE,
    _varint,
    lean_inputs,
    split_raw_contents,
    v2_schedule,
    v2_tensor_parameters,
)
from server.models.catalog import ModelVersion

# headers longer than this are not kept (a header names tensors and a few parameters: far less)
MAX_HEADER_BYTES = 4096
PLANS_PER_SIZE = 4  # plans kept for one request size
MAX_PLANS = 1024  # in all: past it, every plan is dropped and the cache fills again
REPLACE_EVERY = 64  # a full size's misses between replacing one of its plans that never matched again


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (negative int64 values as their 64-bit two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, message) as protobuf writes it."""
    return varint(number << 3 | 2) + varint(len(data)) + data


@dataclass(slots=True, eq=False)
class Planned:
    """What the deserializer gives for a request that matched a plan: the plan, and the request's raw
    contents as views of the bytes gRPC received."""

    plan: InferPlan
    raw: list[memoryview]


class InferPlan:
    """One header: its parsed message (without raw contents), where each raw content's framing sits, and
    the lean inputs (name, dtype, shape), checked against a model version on first use."""

    __slots__ = ("checked", "frames", "header", "hits", "inputs", "message", "name", "size", "version")

    def __init__(self, header: bytes, message: Any, frames: list[tuple[int, bytes, int, int]],
                 inputs: list[tuple[str, np.dtype, list[int]]] | None, size: int) -> None:
        self.header = header
        self.message = message
        self.frames = frames  # (where the tag is, the tag and length bytes, where the data begins, ends)
        self.inputs = inputs
        self.size = size
        self.name: str = message.model_name
        self.version: str | None = message.model_version or None
        self.checked: Checked | None = None
        self.hits = 0

    def check(self, mv: ModelVersion, raw: Sequence[Any]) -> Checked | None:
        """This header against ``mv`` (kept for the next request): None when the general path must answer
        (it names the error, or converts what the lean path would not)."""
        checked = self.checked
        if checked is None or checked.mv is not mv or checked.signature is not mv.signature \
                or checked.config is not mv.batch_config:
            checked = self.checked = Checked(self, mv, raw)
        return None if checked.general else checked


class Checked:
    """A header against one model version: the inputs in the signature's order, the scheduling parameters,
    the outputs answered, and the answer's first fields as bytes. ``general``: the general path answers."""

    __slots__ = ("_tensors", "config", "general", "head", "mv", "names", "order", "priority", "signature",
                 "timeout")

    def __init__(self, plan: InferPlan, mv: ModelVersion, raw: Sequence[Any]) -> None:
        self.mv = mv
        self.signature = mv.signature
        self.config = mv.batch_config
        self.general = True
        self._tensors: dict[tuple[str, np.dtype, tuple[int, ...]], tuple[bytes, bytes]] = {}
        message = plan.message
        assert plan.inputs is not None
        arrays = {name: np.frombuffer(raw[index], dtype).reshape(shape)
                  for index, (name, dtype, shape) in enumerate(plan.inputs)}
        try:
            checked = validate_inputs(mv.signature, arrays)
        except Exception:
            return
        if any(checked[name] is not arrays[name] for name in checked):  # converted: the general path does it
            return
        lean = {name: (index, dtype, shape) for index, (name, dtype, shape) in enumerate(plan.inputs)}
        self.order = [(name, *lean[name]) for name in checked]
        self.names: list[str] | None = [o.name for o in message.outputs] or None
        if self.names and any(name not in mv.signature.outputs for name in self.names):
            return
        try:
            v2_tensor_parameters(message)
        except ValueError:  # a parameter refused: the general path names it
            return
        self.timeout: float | None = None
        self.priority = 0
        if message.parameters:
            if mv.batch_config is None or "signature_name" in message.parameters:  # the default signature's plan
                return
            try:
                self.timeout, self.priority = v2_schedule(message.parameters)
                batcher_priority(self.priority, mv.batch_config.priority_levels)
            except ValueError:  # CodecError, BadRequest: the general path names it
                return
        self.head = _field(1, mv.name.encode()) + _field(2, str(mv.version).encode()) \
            + (_field(3, message.id.encode()) if message.id else b"")
        self.general = False

    def inputs(self, raw: Sequence[Any]) -> dict[str, np.ndarray]:
        """The request's inputs, as validation would have returned them (the signature's order): views, as
        ``np.frombuffer(...).reshape(shape)``."""
        return {name: np.ndarray(shape, dtype, raw[index]) for name, index, dtype, shape in self.order}

    def answer(self, outputs: Mapping[str, np.ndarray]) -> bytes | None:
        """The serialized ModelInferResponse with raw outputs; None when an output is not a fixed-size
        native number (BYTES, big-endian): the message is then built as on the general path."""
        parts = [self.head]
        contents = []
        tensors = self._tensors
        for name in self.names or outputs:
            arr = outputs[name]
            key = (name, arr.dtype, arr.shape)
            framing = tensors.get(key)
            if framing is None:
                datatype = _V2_OF_DTYPE.get(arr.dtype)
                if datatype is None or datatype == "BYTES":
                    return None
                if len(tensors) >= 64:
                    tensors.clear()
                # the outputs entry (field 5), and raw_output_contents' tag (field 6) and length: both follow
                # from the name, dtype and shape
                framing = tensors[key] = (_output_tensor(name, datatype, arr.shape), b"\x32" + varint(arr.nbytes))
            parts.append(framing[0])
            contents.append(framing[1])
            contents.append(arr.tobytes())
        parts += contents
        return b"".join(parts)


def _output_tensor(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    """A ModelInferResponse.outputs entry (field 5): name, datatype, packed shape; empty fields omitted."""
    body = b""
    if name:
        body += _field(1, name.encode())
    body += _field(2, datatype.encode())
    if shape:
        body += _field(3, b"".join(varint(d) for d in shape))
    return _field(5, body)


GENERAL = object()  # Plans.find: a known header that the lean path does not take (parse the request as before)


class Plans:
    """The plans of one server's ModelInfer deserializer, by request size."""

    def __init__(self) -> None:
        self._by_size: dict[int, list[InferPlan]] = {}
        self._misses: dict[int, int] = {}
        self._unplanned: dict[int, int] = {}  # requests of a size that made no plan (no raw contents last)
        self._count = 0

    def find(self, data: bytes) -> Planned | object | None:
        """The request as a Planned if a plan matches it; GENERAL if a header the lean path does not take
        matches it; None if none does."""
        for plan in self._by_size.get(len(data), ()):
            if data.startswith(plan.header):  # this header, then each raw content's framing
                view = memoryview(data)
                raw = []
                for at, prefix, begin, end in plan.frames:
                    if not data.startswith(prefix, at):
                        break
                    raw.append(view[begin:end])
                else:
                    plan.hits += 1
                    return GENERAL if plan.inputs is None else Planned(plan, raw)
        return None

    def wants(self, size: int) -> bool:
        """Whether a request of this size that matched no plan should make one."""
        if self._unplanned.get(size, 0) >= 2:
            return False  # its requests have no raw contents last (typed contents): not worth a look each
        plans = self._by_size.get(size)
        if plans is None or len(plans) < PLANS_PER_SIZE:
            return True
        misses = self._misses[size] = self._misses.get(size, 0) + 1
        return misses % REPLACE_EVERY == 0 and any(plan.hits == 0 for plan in plans)

    def make(self, data: bytes, parse: Any) -> Planned | None:
        """A plan from ``data`` (its raw contents last, the header small), kept; the request as a Planned when
        its inputs are lean, else None (it is then parsed as before, as later requests with its header are)."""
        found = split_raw_contents(data)
        if found is None or found[0] > MAX_HEADER_BYTES:
            if len(self._unplanned) >= 4096:
                self._unplanned.clear()
            self._unplanned[len(data)] = self._unplanned.get(len(data), 0) + 1
            return None
        start, raw = found
        message = parse(data[:start])  # DecodeError: the caller's to report, as for a whole parse
        lean = lean_inputs(message, raw)
        inputs = None if lean is None else [(name, arr.dtype, list(arr.shape)) for name, arr in lean.items()]
        frames = []
        pos = start
        for view in raw:
            begin = _varint(data, _varint(data, pos)[1])[1]
            frames.append((pos, data[pos:begin], begin, begin + view.nbytes))
            pos = begin + view.nbytes
        plan = InferPlan(data[:start], message, frames, inputs, len(data))
        if self._count >= MAX_PLANS:
            self._by_size.clear()
            self._misses.clear()
            self._count = 0
        plans = self._by_size.setdefault(len(data), [])
        if len(plans) >= PLANS_PER_SIZE:
            plans.remove(next(p for p in plans if p.hits == 0))
            self._count -= 1
        plans.append(plan)
        self._count += 1
        return None if inputs is None else Planned(plan, raw)
