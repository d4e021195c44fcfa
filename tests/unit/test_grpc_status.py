"""Every failure's gRPC status: the code of its entry in the one error table; a client's mistake is never
UNKNOWN or INTERNAL, and the retry delay rides in trailing metadata."""

from __future__ import annotations

import grpc
import pytest

from batching import BatcherClosed, DeadlineExceeded, InvalidRequest, QueueFull
from batching.errors import PredictedLate
from server.codecs import CodecError
from server.core.errors import BadRequest, known_errors
from server.core.vocabulary import InvalidInput
from server.grpc.status import grpc_error
from server.models.catalog import ModelNotFound, ModelNotReady

Code = grpc.StatusCode


@pytest.mark.parametrize(("error", "code", "retry"), [
    (CodecError("bad tensor"), Code.INVALID_ARGUMENT, None),
    (InvalidInput("bad shape"), Code.INVALID_ARGUMENT, None),
    (InvalidRequest("rows disagree"), Code.INVALID_ARGUMENT, None),
    (BadRequest("bad parameter"), Code.INVALID_ARGUMENT, None),
    (ModelNotFound("no such model"), Code.NOT_FOUND, None),
    (QueueFull("queue full"), Code.RESOURCE_EXHAUSTED, "1"),
    (PredictedLate("predicted to finish late", retry_after=2.2), Code.RESOURCE_EXHAUSTED, "3"),
    (ModelNotReady("loading"), Code.UNAVAILABLE, "5"),
    (BatcherClosed("draining"), Code.UNAVAILABLE, "1"),
    (DeadlineExceeded("deadline passed"), Code.DEADLINE_EXCEEDED, None),
    (RuntimeError("the model broke"), Code.INTERNAL, None),
])
def test_status_details_and_retry_delay(error, code, retry):
    status = grpc_error(error)
    assert status.code == code
    assert status.details == str(error) or status.details.startswith("model execution failed")
    trailing = dict(status.trailing_metadata)
    assert trailing.get("retry-after") == retry
    if retry is not None:
        assert trailing["grpc-retry-pushback-ms"] == str(int(retry) * 1000)


def test_no_client_mistake_is_unknown_or_internal():
    for kind, info in known_errors().items():
        if info.status < 500:
            error = kind.__new__(kind)  # the class is all classify() looks at
            assert grpc_error(error).code not in (Code.UNKNOWN, Code.INTERNAL), kind.__name__
