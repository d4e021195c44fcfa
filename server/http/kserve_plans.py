"""V2 binary requests over HTTP that repeat: their JSON header decoded, checked and answered once.

A client sends the same JSON header with every request of one shape (tritonclient, the load generator:
the inputs' names, datatypes, shapes and binary sizes, the outputs asked for, the parameters); only the
binary data after it changes. A body whose header is byte for byte a known one, and whose binary part has
the length that header gives, is decoded as that header's first request was: the same inputs (views of
this body), outputs and parameters. The header's structural checks ran on its first request, which the
general decoder (``decode_request``) decoded once, the plan made from what it found; its check against a
model version and signature (``validate_inputs``, the outputs' names, the scheduling parameters) runs
once per version (server/grpc/plans.py does the same for gRPC). The answer's JSON header is built once per
output shape, and only the raw outputs are written anew.

BYTES inputs (encoded images, text) change their binary sizes, and so their header's bytes, from request
to request: a header with BYTES inputs is planned by its text around the sizes (``"binary_data_size":N``),
and each request's sizes are read from its header. Numbers are views of the body, as on the general path;
BYTES elements are read from their length prefixes.

A header that a check fails, or that the plan does not cover (JSON data, arrays the signature would
convert, an id per request), is decoded on the general path each time, which names the error: a request
answers and fails exactly as without plans. At most MAX_PLANS headers are kept; past that the cache is
emptied and fills again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from server.codecs.jsonio import CodecError, loads
from server.codecs.v2 import HEADER_LENGTH, V2Request, schedule_parameters, signature_parameter
from server.codecs.v2_tensor import decode_bytes_tensor, encode_tensors
from server.core.request import InferRequest, batcher_priority
from server.core.vocabulary import validate_inputs
from server.models.catalog import ModelVersion

MAX_HEADER_BYTES = 4096  # longer headers are not kept (a header names a few tensors: far less)
MAX_PLANS = 1024
MAX_HEADS = 64  # answer headers kept per plan and version (one per output shape)
_OBJECT = np.dtype(object)


class BinaryPlan:
    """One JSON header: its parsed request (without inputs), each input's layout in the binary part, and
    its check against the model version that served it last. ``sized``: it has BYTES inputs, whose binary
    sizes each request's header gives (the plan is kept by the header's other text)."""

    __slots__ = ("checked", "layout", "request", "size", "sized")

    def __init__(self, request: V2Request, layout: list[tuple[str, np.dtype, tuple[int, ...], int, int]],
                 size: int) -> None:
        self.request = request  # read by encode: outputs asked for, binary outputs, id
        self.layout = layout  # (name, dtype, shape, offset of its data in the body, element count)
        self.size = size  # the body's length: header and binary data
        self.sized = any(dtype == _OBJECT for _, dtype, _, _, _ in layout)
        self.checked: Checked | None = None

    def inputs(self, body: bytes) -> dict[str, np.ndarray]:
        """This body's inputs, as ``decode_request`` makes them: read-only views of the body."""
        layout = self.layout
        if len(layout) == 1:  # the common case, without a comprehension
            name, dtype, shape, offset, count = layout[0]
            return {name: np.frombuffer(body, dtype, count, offset).reshape(shape)}
        return {name: np.frombuffer(body, dtype, count, offset).reshape(shape)
                for name, dtype, shape, offset, count in layout}

    def sized_inputs(self, body: bytes, length: int, sizes: list[bytes]) -> dict[str, np.ndarray] | None:
        """The inputs of a body whose header is this plan's but for the binary sizes (``sizes``, in input
        order): numbers as views of the body, BYTES elements read from their length prefixes. None when the
        data does not fit the sizes (the general path names how). A sized plan's header holds one size per input
        (``_sizes_are_the_inputs``)."""
        view = memoryview(body)
        inputs = {}
        offset = length
        for (name, dtype, shape, _, count), size in zip(self.layout, sizes):
            end = offset + int(size)
            if end > len(body):
                return None
            if dtype == _OBJECT:
                if count * 4 > end - offset:  # each element's length prefix: checked before anything is made
                    return None
                try:
                    inputs[name] = decode_bytes_tensor(view[offset:end], count, name).reshape(shape)
                except CodecError:
                    return None
            elif end - offset == count * dtype.itemsize:
                inputs[name] = np.frombuffer(body, dtype, count, offset).reshape(shape)
            else:
                return None
            offset = end
        return inputs if offset == len(body) else None


class Checked:
    """A plan against one model version and the signature its parameters name: what the service would
    check is true of every request of this header. ``general``: it is not (the general path names why)."""

    __slots__ = ("config", "default", "general", "heads", "mv", "priority", "request", "signature_name", "timeout")

    def __init__(self, plan: BinaryPlan, mv: ModelVersion, inputs: Mapping[str, np.ndarray]) -> None:
        self.mv, self.config, self.default, self.general = mv, mv.batch_config, mv.signature, True
        # per output shape: the answer's JSON header, and its HTTP headers (shared: never changed)
        self.heads: dict[tuple[tuple[str, np.dtype, tuple[int, ...]], ...], tuple[bytes, Mapping[str, str]]] = {}
        self.request = request = plan.request
        try:
            self.timeout, self.priority = schedule_parameters(request.parameters)
            self.signature_name = signature_parameter(request.parameters)
            if self.priority and mv.batch_config is not None:
                batcher_priority(self.priority, mv.batch_config.priority_levels)
        except Exception:
            return
        signature = mv.signature_named(self.signature_name) if self.signature_name else mv.signature
        if signature is None or any(name not in signature.outputs for name in request.outputs or ()):
            return
        try:
            validated = validate_inputs(signature, inputs)
        except Exception:
            return
        if list(validated) != list(inputs) or any(validated[name] is not inputs[name] for name in validated):
            return  # converted or reordered: the general path does it
        self.general = False

    def answer(self, model: str, outputs: Mapping[str, np.ndarray]) -> tuple[bytes, Mapping[str, str]] | None:
        """The answer's body and its HTTP headers (the JSON header's length): the JSON header made once per
        output shape, the raw outputs after it. None when an output travels as JSON, holds strings or is not
        little-endian (the general encoder writes those)."""
        request = self.request
        names = request.outputs if request.outputs is not None else outputs
        if len(names) == 1:  # the common case, without the generators below
            for name in names:
                arr = outputs[name]
                kept = self.heads.get(((name, arr.dtype, arr.shape),))
                if kept is not None:
                    return kept[0] + arr.tobytes(), kept[1]
        shapes = tuple((name, outputs[name].dtype, outputs[name].shape) for name in names)
        kept = self.heads.get(shapes)
        if kept is None:
            every = "*" in request.binary_outputs
            if any(dtype == _OBJECT or dtype.newbyteorder("<") != dtype or not (every or name in request.binary_outputs)
                   for name, dtype, _ in shapes):
                return None
            encoded = encode_tensors(((name, outputs[name], True) for name in names), errors="replace")
            document = {"model_name": model, "model_version": str(self.mv.version), "outputs": encoded.entries}
            if request.id is not None:
                document["id"] = request.id
            body, length = encoded.body(document)
            assert length is not None
            if len(self.heads) >= MAX_HEADS:
                self.heads.clear()
            self.heads[shapes] = (body[:length], {HEADER_LENGTH: str(length)})
            return body, self.heads[shapes][1]
        return b"".join([kept[0], *(outputs[name].tobytes() for name in names)]), kept[1]


class BinaryPlans:
    """The plans of the headers seen: by their bytes, or (headers with BYTES inputs, whose sizes change from
    request to request) by their text around the binary sizes. A header that cannot be planned is
    remembered too. A header not seen before is decoded once, by the general decoder, and its plan made
    from that decode."""

    def __init__(self) -> None:
        self._plans: dict[bytes, BinaryPlan | None] = {}
        self._sized: dict[tuple[bytes, ...], BinaryPlan] = {}

    def decode(self, request: InferRequest, mv: ModelVersion, body: bytes, length: int,
               general: Callable[[bytes, int], V2Request]) -> V2Request | None:
        """Fill ``request`` from its header's plan (None), or decode the body with ``general`` and return what
        it made (raising what it raises), for the general path to use."""
        if length > MAX_HEADER_BYTES or not 0 < length <= len(body):
            return general(body, length)
        header = body[:length]
        plan = self._plans.get(header, _UNSEEN)
        sizes = None
        if plan is _UNSEEN:
            parts = _SIZES.split(header)  # the text around the binary sizes, and the sizes: [text, size, text...]
            template = tuple(parts[0::2])
            plan = self._sized.get(template, _UNSEEN) if len(parts) > 1 else _UNSEEN
            if plan is _UNSEEN:
                parsed = general(body, length)
                self._learn(header, template, parts[1::2], body, length, parsed)
                return parsed
            sizes = parts[1::2]
        if plan is None:
            return general(body, length)
        checked = plan.checked
        known = checked is not None and checked.mv is mv and checked.config is mv.batch_config \
            and checked.default is mv.signature
        if known and checked.general:  # type: ignore[union-attr]
            return general(body, length)  # before reading the inputs: the general path reads them anyway
        if sizes is not None:
            inputs = plan.sized_inputs(body, length, sizes)
        else:
            inputs = plan.inputs(body) if plan.size == len(body) else None
        if inputs is None:
            return general(body, length)
        if not known:
            checked = plan.checked = Checked(plan, mv, inputs)
            if checked.general:
                return general(body, length)
        assert checked is not None
        request.state = checked
        request.inputs, request.outputs, request.checked = inputs, plan.request.outputs, True
        request.timeout, request.priority, request.signature = checked.timeout, checked.priority, \
            checked.signature_name
        return None

    def _learn(self, header: bytes, template: tuple[bytes, ...], sizes: list[bytes], body: bytes, length: int,
               parsed: V2Request) -> None:
        """Keep the plan of a header first seen, made from its general decode (None: it cannot have one). A
        header with an id is not kept: it changes from request to request."""
        if parsed.id is not None:
            return
        if len(self._plans) + len(self._sized) >= MAX_PLANS:
            self._plans.clear()
            self._sized.clear()
        specs = loads(header)["inputs"]  # decoded: one object per input, in order
        plan = _plan_of(parsed, specs, body, length)
        if plan is not None and plan.sized:
            if _sizes_are_the_inputs(template, len(specs)):
                self._sized[template] = plan
                return
            plan = None
        self._plans[header] = plan


def _sizes_are_the_inputs(template: tuple[bytes, ...], inputs: int) -> bool:
    """Whether the sizes a header's text holds between ``template``'s parts are its inputs' binary sizes, one
    each, in order, and nothing else: a header is kept by its text around them only then. Each is given a
    distinct mark and the header read again; every input's ``binary_data_size`` must be its own mark (an input
    whose size is written otherwise, or a size found elsewhere, such as a custom parameter, fails)."""
    if len(template) - 1 != inputs:
        return False
    marks = [_MARK + index for index in range(inputs)]
    marked = b"".join(b'%s"binary_data_size":%d' % (part, mark) for part, mark in zip(template, marks)) + template[-1]
    try:
        specs = loads(marked)["inputs"]
        return [spec["parameters"]["binary_data_size"] for spec in specs] == marks
    except Exception:
        return False


_UNSEEN: Any = object()
_MARK = 10**15  # sizes no header holds
# a binary size in a JSON header: ``"binary_data_size":N`` (or ``": N"``, as Python's json writes it), N a JSON
# integer (no leading zero, fraction or exponent). Splitting a header by it leaves the text around the sizes
# (the plan's key) and the sizes; the key's own text is equivalent JSON either way
_SIZES = re.compile(rb'"binary_data_size": ?(0|[1-9][0-9]*)(?![0-9.eE])')


def _plan_of(parsed: V2Request, specs: list[dict[str, Any]], body: bytes, length: int) -> BinaryPlan | None:
    """The plan of a header (``specs``: its inputs' entries), from its body's general decode; None when it
    is not covered: JSON data, binary data the inputs do not account for."""
    if any("binary_data_size" not in (spec.get("parameters") or {}) for spec in specs):
        return None
    layout = []
    offset = length
    for spec, (name, arr) in zip(specs, parsed.inputs.items()):
        size = spec["parameters"]["binary_data_size"]
        layout.append((name, arr.dtype, arr.shape, offset, arr.size))
        offset += size
    if offset != len(body):
        return None
    request = V2Request(inputs={}, id=None, parameters=parsed.parameters, outputs=parsed.outputs,
                        binary_outputs=parsed.binary_outputs)
    return BinaryPlan(request, layout, len(body))
