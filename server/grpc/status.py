"""Every failure as a gRPC status: ``server/core/errors.py``'s classify() decides, this table translates.

The message is the HTTP one (``errors.message``). A client's mistake is never UNKNOWN or INTERNAL:
INTERNAL is kept for a model that failed on a batch (HTTP 500).

=========  ==================  ==========================================================
HTTP       gRPC                when
=========  ==================  ==========================================================
400        INVALID_ARGUMENT    bad tensor, shape, dtype, name, size, parameter
401        UNAUTHENTICATED     no bearer token, or an unknown one
403        PERMISSION_DENIED   a token without the scope or the model
404        NOT_FOUND           model, version or label unknown
413        RESOURCE_EXHAUSTED  (HTTP body limit; gRPC's own message limit answers this itself)
429        RESOURCE_EXHAUSTED  a token over its request rate: retry delay in trailing metadata
503        RESOURCE_EXHAUSTED  the queue is full, predicted late, the front end overloaded: retry delay in
                              trailing metadata
503        UNAVAILABLE         not ready, draining, worker lost: retry delay in trailing metadata
504        DEADLINE_EXCEEDED   the deadline passed before the batch ran (never computed)
499        CANCELLED           the client cancelled
500        INTERNAL            the model failed on the batch
=========  ==================  ==========================================================

Retry delays travel as ``retry-after`` (seconds, as HTTP's header) and ``grpc-retry-pushback-ms`` (what
gRPC's own retry policy reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from server.core.errors import classify, message, retry_after

_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    499: grpc.StatusCode.CANCELLED,
    500: grpc.StatusCode.INTERNAL,
}


@dataclass(frozen=True)
class GrpcError:
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()


def grpc_error(error: BaseException) -> GrpcError:
    """The status, details and trailing metadata that answer ``error``."""
    info = classify(error)
    code = _CODES.get(info.status) or (grpc.StatusCode.INVALID_ARGUMENT if info.status < 500
                                       else grpc.StatusCode.UNAVAILABLE)  # a status added later: never UNKNOWN
    if info.reason in ("queue_full", "predicted_late", "overloaded", "admitted_rate"):  # refused for load: retry later
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    seconds = retry_after(error)  # the same as HTTP's Retry-After
    metadata: tuple[tuple[str, str], ...] = ()
    if seconds is not None:
        metadata = (("retry-after", str(seconds)), ("grpc-retry-pushback-ms", str(seconds * 1000)))
    return GrpcError(code, message(error), metadata)
