"""V2 binary requests over HTTP that repeat: their JSON header decoded, checked and answered once.

A client sends the same JSON header with every request of one shape (tritonclient, the load generator:
the inputs' names, datatypes, shapes and binary sizes, the outputs asked for, the parameters); only the
binary data after it changes. A body whose header is byte for byte a known one, and whose binary part has
the length that header gives, is decoded as that header's first request was: the same inputs (views of
this body), outputs and parameters. The header's structural checks ran on its first request
(``decode_request``); its check against a model version and signature (``validate_inputs``, the outputs'
names, the scheduling parameters) runs once per version (server/grpc/plans.py does the same for gRPC).
The answer's JSON header is built once per output shape, and only the raw outputs are written anew.

A header that a check fails, or that the plan does not cover (JSON data, BYTES, arrays the signature
would convert, an id per request), is decoded on the general path each time, which names the error: a
request answers and fails exactly as without plans. At most MAX_PLANS headers are kept; past that the
cache is emptied and fills again.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from server.codecs.jsonio import loads
from server.codecs.v2 import V2Request, decode_request, schedule_parameters, signature_parameter
from server.codecs.v2_tensor import encode_tensors, raw_bytes
from server.core.request import InferRequest, batcher_priority
from server.core.vocabulary import validate_inputs
from server.models.catalog import ModelVersion

MAX_HEADER_BYTES = 4096  # longer headers are not kept (a header names a few tensors: far less)
MAX_PLANS = 1024
MAX_HEADS = 64  # answer headers kept per plan and version (one per output shape)
_OBJECT = np.dtype(object)


class BinaryPlan:
    """One JSON header: its parsed request (without inputs), each input's layout in the binary part, and
    its check against the model version that served it last."""

    __slots__ = ("checked", "layout", "request", "size")

    def __init__(self, request: V2Request, layout: list[tuple[str, np.dtype, tuple[int, ...], int, int]],
                 size: int) -> None:
        self.request = request  # read by encode: outputs asked for, binary outputs, id
        self.layout = layout  # (name, dtype, shape, offset of its data in the body, element count)
        self.size = size  # the body's length: header and binary data
        self.checked: Checked | None = None

    def inputs(self, body: bytes) -> dict[str, np.ndarray]:
        """This body's inputs, as ``decode_request`` makes them: read-only views of the body."""
        return {name: np.frombuffer(body, dtype, count, offset).reshape(shape)
                for name, dtype, shape, offset, count in self.layout}


class Checked:
    """A plan against one model version and the signature its parameters name: what the service would
    check is true of every request of this header. ``general``: it is not (the general path names why)."""

    __slots__ = ("config", "default", "general", "heads", "mv", "priority", "request", "signature_name", "timeout")

    def __init__(self, plan: BinaryPlan, mv: ModelVersion, inputs: Mapping[str, np.ndarray]) -> None:
        self.mv, self.config, self.default, self.general = mv, mv.batch_config, mv.signature, True
        self.heads: dict[tuple[tuple[str, np.dtype, tuple[int, ...]], ...], bytes] = {}
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

    def answer(self, model: str, outputs: Mapping[str, np.ndarray]) -> tuple[bytes, int | None] | None:
        """The answer's body and its JSON header's length: the header made once per output shape. None when
        an output travels as JSON or holds strings (the general encoder writes those)."""
        request = self.request
        names = request.outputs if request.outputs is not None else list(outputs)
        every = "*" in request.binary_outputs
        shapes = tuple((name, outputs[name].dtype, outputs[name].shape) for name in names)
        head = self.heads.get(shapes)
        if head is None:
            if any(dtype == _OBJECT or not (every or name in request.binary_outputs) for name, dtype, _ in shapes):
                return None
            encoded = encode_tensors(((name, outputs[name], True) for name in names), errors="replace")
            document = {"model_name": model, "model_version": str(self.mv.version), "outputs": encoded.entries}
            if request.id is not None:
                document["id"] = request.id
            body, length = encoded.body(document)
            assert length is not None
            if len(self.heads) >= MAX_HEADS:
                self.heads.clear()
            self.heads[shapes] = body[:length]
            return body, length
        return b"".join([head, *(raw_bytes(outputs[name]) for name in names)]), len(head)


class BinaryPlans:
    """The plans of the headers seen, by their bytes; a header that cannot be planned is remembered too."""

    def __init__(self) -> None:
        self._plans: dict[bytes, BinaryPlan | None] = {}

    def decode(self, request: InferRequest, mv: ModelVersion, body: bytes, length: int) -> bool:
        """Fill ``request`` from its plan (True), or leave it to the general path (False)."""
        if length > MAX_HEADER_BYTES or not 0 < length <= len(body):
            return False
        header = body[:length]
        plans = self._plans
        if header in plans:
            plan = plans[header]
        else:
            plan = _plan_of(body, length)
            if len(plans) >= MAX_PLANS:
                plans.clear()
            plans[header] = plan
        if plan is None or plan.size != len(body):
            return False
        inputs = plan.inputs(body)
        checked = plan.checked
        if checked is None or checked.mv is not mv or checked.config is not mv.batch_config \
                or checked.default is not mv.signature:
            checked = plan.checked = Checked(plan, mv, inputs)
        if checked.general:
            return False
        request.state = checked
        request.inputs, request.outputs, request.checked = inputs, plan.request.outputs, True
        request.timeout, request.priority, request.signature = checked.timeout, checked.priority, \
            checked.signature_name
        return True


def _plan_of(body: bytes, length: int) -> BinaryPlan | None:
    """The plan of this body's header, from a decode of the whole body (its checks); None when it fails
    them or is not covered: JSON data, BYTES, an id (it changes from request to request)."""
    try:
        parsed = decode_request(body, length)
    except Exception:
        return None
    specs = loads(body[:length])["inputs"]  # decoded above: a list of objects, one per input, in order
    if parsed.id is not None or any("binary_data_size" not in (spec.get("parameters") or {}) for spec in specs) \
            or any(arr.dtype == _OBJECT for arr in parsed.inputs.values()):
        return None
    layout = []
    offset = length
    for name, arr in parsed.inputs.items():
        layout.append((name, arr.dtype, arr.shape, offset, arr.size))
        offset += arr.nbytes
    if offset != len(body):
        return None
    parsed.inputs = {}
    return BinaryPlan(parsed, layout, len(body))
