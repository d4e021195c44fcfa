"""Every error a request can meet, mapped once to an HTTP status and a JSON body.

Exception tree (what raises it → status)::

    CodecError            server.codecs: body is not valid JSON / tensors        → 400
    InvalidInput          server.core.vocabulary:        body does not fit signature → 400
    InvalidRequest        batching: rows disagree, bad priority                  → 400
    BadRequest            server.http: bad parameter or path                      → 400
    ModelControlError     server.models.control: bad name or config, load failed  → 400
    Unauthorized          server.admission.auth: no bearer token or an unknown one         → 401
    Forbidden             server.admission.auth: the token lacks the scope or the model    → 403
    ModelNotFound         server.models.repository: model, version or label unknown    → 404
    RateLimited           server.admission.limits: the token used its auth_rate_limit      → 429 + Retry-After
    InflightFull          server.admission.limits: max_inflight_bytes held by the front end → 503 + Retry-After
    Overloaded            server.admission.overload: the front end's loop runs too far behind a model's SLO
                                                                                 → 503 + Retry-After
      LateAnswers         server.admission.rate: over the rate let through while answers come late
                                                                                 → 503 + Retry-After
    BodyTooLarge          server.http: body over max_body_bytes                   → 413
    PredictedLate         batching (scheduling: slo): would finish after its deadline → 503 + Retry-After
    QueueFull             batching: the model's queue is full                    → 503 + Retry-After
    ModelNotReady         server.models.repository: loading, unloading or failed        → 503 + Retry-After
    BatcherClosed         batching: version retired or server draining           → 503 + Retry-After
    WorkerCrashed         server.runtime: the worker died or hung, twice (or retry_on_worker_crash: 0)
                                                                                 → 503 + Retry-After
    PoisonInput           batching: the input crashed the model alone; quarantined → 500 (not retried)
    DeadlineExceeded      batching: deadline passed before the batch ran         → 504
    ClientDisconnect      the client left while its body was being read         → 499 (logged, never sent)
    anything else         the model failed on a batch                            → 500

The body is ``{"error": "<message>"}`` in both protocols (TF Serving's and KServe V2's shape).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from batching import BatcherClosed, DeadlineExceeded, InvalidRequest, PoisonInput, PredictedLate, QueueFull
from server.admission.auth import Forbidden, Unauthorized
from server.admission.limits import InflightFull, RateLimited
from server.admission.overload import Overloaded
from server.admission.rate import LateAnswers
from server.codecs import CodecError, dumps
from server.core.vocabulary import InvalidInput
from server.models.control import ModelControlError
from server.models.repository import ModelNotFound, ModelNotReady
from server.runtime import WorkerCrashed


class BadRequest(ValueError):
    """A parameter or path segment is invalid (HTTP 400)."""


class BodyTooLarge(ValueError):
    """The request body is larger than the server accepts (HTTP 413)."""


@dataclass(frozen=True)
class ErrorInfo:
    status: int
    reason: str  # rejected_total reason / SLO outcome
    retry_after: int | None = None


_STATUS: list[tuple[type[BaseException], ErrorInfo]] = [
    (CodecError, ErrorInfo(400, "invalid")),
    (InvalidInput, ErrorInfo(400, "invalid")),
    (InvalidRequest, ErrorInfo(400, "invalid")),
    (BadRequest, ErrorInfo(400, "invalid")),
    (ModelControlError, ErrorInfo(400, "invalid")),
    (Unauthorized, ErrorInfo(401, "unauthenticated")),
    (Forbidden, ErrorInfo(403, "forbidden")),
    (ModelNotFound, ErrorInfo(404, "invalid")),
    (RateLimited, ErrorInfo(429, "rate_limited", retry_after=1)),
    (InflightFull, ErrorInfo(503, "inflight_full", retry_after=1)),
    (LateAnswers, ErrorInfo(503, "admitted_rate", retry_after=1)),  # an Overloaded: first
    (Overloaded, ErrorInfo(503, "overloaded", retry_after=1)),
    (BodyTooLarge, ErrorInfo(413, "invalid")),
    (PredictedLate, ErrorInfo(503, "predicted_late", retry_after=1)),  # a QueueFull: first
    (QueueFull, ErrorInfo(503, "queue_full", retry_after=1)),
    (ModelNotReady, ErrorInfo(503, "not_ready", retry_after=5)),
    (BatcherClosed, ErrorInfo(503, "closed", retry_after=1)),
    (WorkerCrashed, ErrorInfo(503, "worker_crashed", retry_after=1)),
    (DeadlineExceeded, ErrorInfo(504, "deadline")),
    (PoisonInput, ErrorInfo(500, "poison")),
    (ClientDisconnect, ErrorInfo(499, "cancelled")),
]


def classify(error: BaseException) -> ErrorInfo:
    for kind, info in _STATUS:
        if isinstance(error, kind):
            return info
    if type(error).__name__ == "InvalidArgumentError":  # TensorFlow rejected the batch's values
        return ErrorInfo(400, "invalid")
    return ErrorInfo(500, "error")


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
