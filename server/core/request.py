"""One inference request, whatever protocol brought it: what admission, validation, batching and
accounting read.

A front end builds an ``InferRequest`` from what it knows before the body (model, version or label,
protocol, caller) and its protocol's ``Codec``; admission reads it then. The codec's ``decode`` fills
the rest (inputs, requested outputs, signature, timeout, priority) from the payload once the version
is resolved, and its ``encode`` turns the outputs into the protocol's answer. Everything between is
``InferenceService.infer``'s, the same for every protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from server.core.errors import BadRequest
from server.core.vocabulary import Signature
from server.models.catalog import ModelVersion


class Codec(Protocol):
    """A protocol's two halves around the service: no admission, validation or accounting in either."""

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        """Fill ``request``'s inputs (and outputs, signature, timeout, priority) from its payload."""

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Any:
        """The protocol's answer to ``request`` (an HTTP Reply, a gRPC message or its bytes)."""


@dataclass(slots=True, eq=False)
class InferRequest:
    protocol: str  # the metrics' protocol label: "v2", "tfserving", "grpc"
    model: str
    version: str | int | None  # None: the version policy's latest (or the label's)
    label: str | None
    codec: Codec
    payload: Any = None  # what arrived, for the codec: body bytes, a gRPC message
    caller: bytes | None = None  # the bearer token's digest, once admitted (None: no tokens file)
    signature: str | None = None  # the signature asked for; None or "": the one served
    inputs: Mapping[str, np.ndarray] | None = None
    outputs: Sequence[str] | None = None  # the outputs asked for; None: all of them
    timeout: float | None = None  # seconds from arrival to the deadline
    priority: int = 0  # Triton's: 1 highest, the model's priority_levels lowest, 0 the default
    checked: bool = False  # inputs already validated against ``mv``'s signature (a gRPC plan's)
    mv: ModelVersion | None = None  # resolved once, by admission or by infer
    started: float = 0.0  # time.perf_counter() at arrival
    state: Any = None  # the codec's own, from decode to encode
    headers: Any = None  # the caller's (name, value) pairs, or a callable giving them: read only for a log line
    request_id: str | None = None  # set once a line is logged for it; the front end answers with it
    trace: Any = None  # sampled for tracing: its span (server/observability/spans.py's RequestTrace); else None
    # the access log's draw (made in infer): None before it, False for no line, else the line's batch numbers (a
    # Measured, server/observability/trace_context.py: its ``trace`` when traced)
    line: Any = None


def batcher_priority(priority: int, levels: int) -> int:
    """Triton's priority (1 highest, ``levels`` lowest, 0 the default) as the batcher's level (0 the
    default and lowest, ``levels - 1`` the highest)."""
    if not 0 <= priority <= levels:
        raise BadRequest(f"parameters.priority must be an integer in 0..{levels} (1 is highest, 0 default)")
    return levels - priority if priority else 0


def served_signature(request: InferRequest, mv: ModelVersion) -> Signature:
    """The signature ``request`` names (none: the version's default), served by ``mv``, else 400."""
    signature = mv.signature_named(request.signature)
    if signature is None:
        served = list(mv.description.signatures) if mv.description is not None else []
        raise BadRequest(f"signature {request.signature!r} is not served for model {request.model!r}; "
                         f"served: {served}")
    return signature


def check_names(request: InferRequest, signature: Signature) -> None:
    """The outputs ``request`` asks for are ``signature``'s, else 400."""
    unknown = [o for o in request.outputs or () if o not in signature.outputs]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}; the model has outputs {sorted(signature.outputs)}")
