"""Every failure as a gRPC status: the code is the error's entry in ``server/core/errors.py``'s one
table (``ErrorInfo.grpc_code``, the exception tree there lists each), the details its HTTP message
(``errors.message``). A client's mistake is never UNKNOWN or INTERNAL: INTERNAL is kept for a model
that failed on a batch (HTTP 500); refusals for load (a full queue, predicted late, the front end
overloaded, a token over its rate) are RESOURCE_EXHAUSTED, the other 503s UNAVAILABLE.

Retry delays travel as ``retry-after`` (seconds, as HTTP's header) and ``grpc-retry-pushback-ms`` (what
gRPC's own retry policy reads).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from server.core.errors import classify, message, retry_after


@dataclass(frozen=True)
class GrpcError:
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...] = ()


def grpc_error(error: BaseException) -> GrpcError:
    """The status, details and trailing metadata that answer ``error``."""
    code = grpc.StatusCode[classify(error).grpc_code]
    seconds = retry_after(error)  # the same as HTTP's Retry-After
    metadata: tuple[tuple[str, str], ...] = ()
    if seconds is not None:
        metadata = (("retry-after", str(seconds)), ("grpc-retry-pushback-ms", str(seconds * 1000)))
    return GrpcError(code, message(error), metadata)
