"""Every error a request can meet, kept once: its class's HTTP status, gRPC code, metric reason and Retry-After.

``classify(error)`` reads the table by the error's class MRO (a subclass's own entry first, else its
parent's). Everything else derives from it: HTTP answers (``error_parts``), gRPC statuses
(server/grpc/status.py), the classes rebuilt by name after the engine hop (server/multiprocess/remote.py,
``error_class``) and the rejected_total reasons created at zero (server/observability/metrics.py).

Exception tree (who raises it → HTTP status, gRPC code; +R: with Retry-After)::

    CodecError           server.codecs: body is not valid JSON / tensors            → 400 INVALID_ARGUMENT
    InvalidInput         server.core.vocabulary: body does not fit the signature    → 400 INVALID_ARGUMENT
    InvalidRequest       batching: rows disagree, bad priority                      → 400 INVALID_ARGUMENT
    BadRequest           server.http, server.grpc: bad parameter or path            → 400 INVALID_ARGUMENT
    ModelControlError    server.models.control: bad name or config, load failed     → 400 INVALID_ARGUMENT
    Unauthorized         server.admission.auth: no bearer token or an unknown one   → 401 UNAUTHENTICATED
    Forbidden            server.admission.auth: the token lacks the scope or model  → 403 PERMISSION_DENIED
    ModelNotFound        server.models.catalog: model, version, label unknown       → 404 NOT_FOUND
    BodyTooLarge         server.http: body over max_body_bytes                      → 413 RESOURCE_EXHAUSTED
    RateLimited          server.admission.limits: over the token's auth_rate_limit  → 429 RESOURCE_EXHAUSTED +R
    InflightFull         server.admission.limits: max_inflight_bytes held already   → 503 UNAVAILABLE +R
    Overloaded           server.admission.overload: the loop runs too far behind    → 503 RESOURCE_EXHAUSTED +R
      LateAnswers        server.admission.rate: over the rate let in, answers late  → 503 RESOURCE_EXHAUSTED +R
    QueueFull            batching: the model's queue is full                        → 503 RESOURCE_EXHAUSTED +R
      PredictedLate      batching (scheduling: slo): would finish too late          → 503 RESOURCE_EXHAUSTED +R
    ModelNotReady        server.models.catalog: loading, unloading or failed        → 503 UNAVAILABLE +R (5 s)
    BatcherClosed        batching: version retired or server draining               → 503 UNAVAILABLE +R
    WorkerCrashed        server.runtime: the worker died, twice (or no retry)       → 503 UNAVAILABLE +R
      WorkerHung         server.runtime: the batch ran past batch_timeout_ms        → 503 UNAVAILABLE +R
    PoisonInput          batching: the input alone crashed the model; quarantined   → 500 INTERNAL (not retried)
    DeadlineExceeded     batching: deadline passed before the batch ran             → 504 DEADLINE_EXCEEDED
    ClientDisconnect     the client left while its body was being read              → 499 CANCELLED (never sent)
    InvalidArgumentError TensorFlow rejected the batch's values (by name)           → 400 INVALID_ARGUMENT
    anything else        the model failed on a batch                                → 500 INTERNAL

The body is ``{"error": "<message>"}`` in both protocols (TF Serving's and KServe V2's shape); gRPC's
details are the same message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from batching import BatcherClosed, DeadlineExceeded, InvalidRequest, PoisonInput, PredictedLate, QueueFull
from server.admission.auth import Forbidden, Unauthorized
from server.admission.limits import InflightFull, RateLimited
from server.admission.overload import Overloaded
from server.admission.rate import LateAnswers
from server.codecs import CodecError, dumps
from server.core.vocabulary import InvalidInput
from server.models.catalog import ModelNotFound, ModelNotReady
from server.models.control import ModelControlError
from server.runtime import WorkerCrashed, WorkerHung


class BadRequest(ValueError):
    """A parameter or path segment is invalid (HTTP 400)."""


class BodyTooLarge(ValueError):
    """The request body is larger than the server accepts (HTTP 413)."""


@dataclass(frozen=True)
class ErrorInfo:
    status: int  # HTTP
    grpc_code: str  # a grpc.StatusCode's name (server/grpc/status.py resolves it: core needs no grpc)
    reason: str  # rejected_total reason / SLO outcome
    retry_after: int | None = None  # default Retry-After seconds; None: retrying later does not help


_INVALID = ErrorInfo(400, "INVALID_ARGUMENT", "invalid")
_FAILED = ErrorInfo(500, "INTERNAL", "error")  # anything else: the model failed on the batch
_TREE: dict[type[BaseException], ErrorInfo] = {
    CodecError: _INVALID,
    InvalidInput: _INVALID,
    InvalidRequest: _INVALID,
    BadRequest: _INVALID,
    ModelControlError: _INVALID,
    Unauthorized: ErrorInfo(401, "UNAUTHENTICATED", "unauthenticated"),
    Forbidden: ErrorInfo(403, "PERMISSION_DENIED", "forbidden"),
    ModelNotFound: ErrorInfo(404, "NOT_FOUND", "invalid"),
    BodyTooLarge: ErrorInfo(413, "RESOURCE_EXHAUSTED", "invalid"),  # gRPC's own message limit answers this itself
    RateLimited: ErrorInfo(429, "RESOURCE_EXHAUSTED", "rate_limited", 1),
    InflightFull: ErrorInfo(503, "UNAVAILABLE", "inflight_full", 1),
    Overloaded: ErrorInfo(503, "RESOURCE_EXHAUSTED", "overloaded", 1),  # refused for load: RESOURCE_EXHAUSTED
    LateAnswers: ErrorInfo(503, "RESOURCE_EXHAUSTED", "admitted_rate", 1),
    QueueFull: ErrorInfo(503, "RESOURCE_EXHAUSTED", "queue_full", 1),
    PredictedLate: ErrorInfo(503, "RESOURCE_EXHAUSTED", "predicted_late", 1),
    ModelNotReady: ErrorInfo(503, "UNAVAILABLE", "not_ready", 5),
    BatcherClosed: ErrorInfo(503, "UNAVAILABLE", "closed", 1),
    WorkerCrashed: ErrorInfo(503, "UNAVAILABLE", "worker_crashed", 1),
    WorkerHung: ErrorInfo(503, "UNAVAILABLE", "worker_crashed", 1),  # its own entry: the engine hop rebuilds it by name
    PoisonInput: ErrorInfo(500, "INTERNAL", "poison"),
    DeadlineExceeded: ErrorInfo(504, "DEADLINE_EXCEEDED", "deadline"),
    ClientDisconnect: ErrorInfo(499, "CANCELLED", "cancelled"),
}
_BY_NAME = {kind.__name__: kind for kind in _TREE}
assert len(_BY_NAME) == len(_TREE), "two error classes of one name: the engine hop could not tell them apart"


def known_errors() -> dict[type[BaseException], ErrorInfo]:
    """Every registered error class and its entry (a copy)."""
    return dict(_TREE)


def error_class(name: str) -> type[BaseException] | None:
    """The registered error class named ``name`` (how an error crosses a process boundary), else None."""
    return _BY_NAME.get(name)


def classify(error: BaseException) -> ErrorInfo:
    for kind in type(error).__mro__:  # a subclass's own entry first, else its parent's
        info = _TREE.get(kind)
        if info is not None:
            return info
    if type(error).__name__ == "InvalidArgumentError":  # TensorFlow rejected the batch's values
        return _INVALID
    return _FAILED


def message(error: BaseException) -> str:
    text = str(error).strip()
    if classify(error).reason == "error":
        first = text.splitlines()[0] if text else ""
        return f"model execution failed: {type(error).__name__}: {first}".rstrip(": ")
    return text or type(error).__name__


def retry_after(error: BaseException) -> int | None:
    """Whole seconds for Retry-After: the error's own prediction (a queue's drain time), at least
    the class's default, or None where retrying later does not help."""
    default = classify(error).retry_after
    if default is None:
        return None
    predicted = getattr(error, "retry_after", None)
    return default if predicted is None else max(default, math.ceil(predicted))


def error_parts(error: BaseException) -> tuple[int, bytes, dict[str, str] | None]:
    """Status, JSON error body and (for 503) Retry-After, the same for every endpoint."""
    seconds = retry_after(error)
    headers = {"Retry-After": str(seconds)} if seconds else None
    return classify(error).status, dumps({"error": message(error)}), headers


def error_response(error: BaseException) -> Response:
    status, body, headers = error_parts(error)
    return Response(body, status, headers, "application/json")


def json_response(document: Any, status: int = 200) -> Response:
    return Response(dumps(document), status, media_type="application/json")
