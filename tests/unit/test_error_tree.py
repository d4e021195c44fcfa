"""The one error tree (server/core/errors.py), walked class by class through every way an error travels: one
process (classify, message, Retry-After), the engine hop (an Error message as a plain tuple, rebuilt by
name), HTTP (status, JSON body, Retry-After header), gRPC (code, details, retry metadata) and the
rejected_total reasons created at zero. The walk is parametrized over the table, so a class registered
later is walked too; EXPECTED pins each class's mapping, so a wrong one (or an unpinned class) fails."""

from __future__ import annotations

import pickle
import re
from typing import get_args

import grpc
import orjson
import pytest
from prometheus_client import CollectorRegistry

from batching import RejectReason
from server.core import errors
from server.core.errors import classify, error_class, error_parts, error_response, known_errors, message, retry_after
from server.grpc.status import grpc_error
from server.multiprocess import messages
from server.multiprocess.remote import rebuild_error
from server.observability.metrics import Metrics

# class name: (HTTP status, gRPC code, rejected_total reason, default Retry-After seconds)
EXPECTED: dict[str, tuple[int, str, str, int | None]] = {
    "CodecError": (400, "INVALID_ARGUMENT", "invalid", None),
    "InvalidInput": (400, "INVALID_ARGUMENT", "invalid", None),
    "InvalidRequest": (400, "INVALID_ARGUMENT", "invalid", None),
    "BadRequest": (400, "INVALID_ARGUMENT", "invalid", None),
    "ModelControlError": (400, "INVALID_ARGUMENT", "invalid", None),
    "Unauthorized": (401, "UNAUTHENTICATED", "unauthenticated", None),
    "Forbidden": (403, "PERMISSION_DENIED", "forbidden", None),
    "ModelNotFound": (404, "NOT_FOUND", "invalid", None),
    "BodyTooLarge": (413, "RESOURCE_EXHAUSTED", "invalid", None),
    "RateLimited": (429, "RESOURCE_EXHAUSTED", "rate_limited", 1),
    "InflightFull": (503, "UNAVAILABLE", "inflight_full", 1),
    "Overloaded": (503, "RESOURCE_EXHAUSTED", "overloaded", 1),
    "LateAnswers": (503, "RESOURCE_EXHAUSTED", "admitted_rate", 1),
    "QueueFull": (503, "RESOURCE_EXHAUSTED", "queue_full", 1),
    "PredictedLate": (503, "RESOURCE_EXHAUSTED", "predicted_late", 1),
    "ModelNotReady": (503, "UNAVAILABLE", "not_ready", 5),
    "BatcherClosed": (503, "UNAVAILABLE", "closed", 1),
    "WorkerCrashed": (503, "UNAVAILABLE", "worker_crashed", 1),
    "WorkerHung": (503, "UNAVAILABLE", "worker_crashed", 1),
    "PoisonInput": (500, "INTERNAL", "poison", None),
    "DeadlineExceeded": (504, "DEADLINE_EXCEEDED", "deadline", None),
    "ClientDisconnect": (499, "CANCELLED", "cancelled", None),
}
CLASSES = sorted(known_errors(), key=lambda kind: kind.__name__)
# rejected_total reasons that dashboards, alerts and tests read: never lost
REJECTED_BEFORE = {"invalid", "not_ready", "queue_full", "deadline", "cancelled", "closed", "poison", "predicted_late",
                   "overloaded", "admitted_rate"}


def made(kind: type[BaseException], predicted: float | None = None) -> BaseException:
    """One error of ``kind``, as its raiser makes it; ``predicted``: the Retry-After it predicts."""
    error = kind(f"{kind.__name__}: what went wrong, for a person")
    if predicted is not None:
        error.retry_after = predicted  # type: ignore[attr-defined]
    return error


def expected(kind: type[BaseException]) -> tuple[int, str, str, int | None]:
    assert kind.__name__ in EXPECTED, f"{kind.__name__} is in the error table: pin its mapping in EXPECTED"
    return EXPECTED[kind.__name__]


def across_the_engine_hop(error: BaseException) -> BaseException:
    """``error`` as the engine sends it (an Error message, a plain tuple over the channel) and the front end
    raises it."""
    wire = pickle.loads(pickle.dumps(tuple(messages.Error.of(7, error))))
    received: list[messages.Error] = []
    messages.dispatcher({messages.Error: received.append})(wire)
    [sent] = received
    assert sent.rid == 7
    return rebuild_error(sent.error_type, sent.text, sent.retry_after)


def test_every_registered_class_is_pinned_and_named_once() -> None:
    assert sorted(kind.__name__ for kind in CLASSES) == sorted(EXPECTED)
    assert all(error_class(kind.__name__) is kind for kind in CLASSES)
    assert error_class("SomeModelsOwnError") is None


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
def test_one_process(kind: type[BaseException]) -> None:
    status, code, reason, seconds = expected(kind)
    error = made(kind)
    info = classify(error)
    assert (info.status, info.grpc_code, info.reason, info.retry_after) == (status, code, reason, seconds)
    assert message(error) == str(error)
    assert retry_after(error) == seconds
    assert retry_after(made(kind, predicted=2.2)) == (None if seconds is None else max(seconds, 3))


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("predicted", [None, 2.2])
def test_the_engine_hop(kind: type[BaseException], predicted: float | None) -> None:
    error = made(kind, predicted)
    rebuilt = across_the_engine_hop(error)
    assert type(rebuilt) is kind
    assert str(rebuilt) == str(error)
    assert classify(rebuilt) == classify(error)
    assert retry_after(rebuilt) == retry_after(error)
    assert error_parts(rebuilt) == error_parts(error)
    assert grpc_error(rebuilt) == grpc_error(error)


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("predicted", [None, 2.2])
def test_http(kind: type[BaseException], predicted: float | None) -> None:
    status, _, _, seconds = expected(kind)
    error = made(kind, predicted)
    header = None if seconds is None else str(seconds if predicted is None else max(seconds, 3))
    answer, body, headers = error_parts(error)
    assert (answer, orjson.loads(body), (headers or {}).get("Retry-After")) == (status, {"error": str(error)}, header)
    response = error_response(error)
    assert (response.status_code, response.body, response.headers.get("retry-after")) == (status, body, header)
    assert response.media_type == "application/json"


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("predicted", [None, 2.2])
def test_grpc(kind: type[BaseException], predicted: float | None) -> None:
    _, code, _, seconds = expected(kind)
    error = made(kind, predicted)
    status = grpc_error(error)
    assert status.code is grpc.StatusCode[code]
    assert status.details == str(error) == orjson.loads(error_parts(error)[1])["error"]
    if seconds is None:
        assert status.trailing_metadata == ()
    else:
        delay = seconds if predicted is None else max(seconds, 3)
        assert dict(status.trailing_metadata) == {"retry-after": str(delay), "grpc-retry-pushback-ms": str(delay * 1000)}


def test_errors_outside_the_table() -> None:
    """A model's own failure is a 500 with its type name (also after the engine hop); TensorFlow's
    InvalidArgumentError, known by name only, is the client's 400."""
    failure = RuntimeError("out of memory\nsecond line")
    for error in (failure, across_the_engine_hop(failure)):
        info = classify(error)
        assert (info.status, info.grpc_code, info.reason, info.retry_after) == (500, "INTERNAL", "error", None)
        assert message(error) == "model execution failed: RuntimeError: out of memory"
        assert grpc_error(error).code is grpc.StatusCode.INTERNAL
    invalid = type("InvalidArgumentError", (Exception,), {})("indices[0] = 7 is not in [0, 5)")
    info = classify(invalid)
    assert (info.status, info.grpc_code, info.reason, info.retry_after) == (400, "INVALID_ARGUMENT", "invalid", None)
    assert grpc_error(invalid).code is grpc.StatusCode.INVALID_ARGUMENT


def test_every_reason_counted_against_a_version_is_a_series_from_the_start() -> None:
    """Admission's refusals before a version is resolved are counted with version "": no zero series per
    version for them (a series that never moves beside the one that does)."""
    metrics = Metrics(CollectorRegistry())
    metrics.initialize("m", "1")
    created = {labels["reason"] for labels in
               (sample.labels for family in metrics.registry.collect() for sample in family.samples
                if sample.name == "batchserve_rejected_total")}
    table = {reason for _, _, reason, _ in EXPECTED.values()}
    unversioned = {"unauthenticated", "forbidden", "rate_limited", "inflight_full", "worker_crashed"}
    assert created == (table | set(get_args(RejectReason)) | REJECTED_BEFORE) - unversioned


@pytest.mark.parametrize("kind", CLASSES, ids=lambda kind: kind.__name__)
def test_the_docstring_tree_says_what_the_table_does(kind: type[BaseException]) -> None:
    status, code, _, _ = expected(kind)
    doc = errors.__doc__ or ""
    line = re.search(rf"^ +{kind.__name__} .*$", doc, re.MULTILINE)
    assert line is not None, f"{kind.__name__} is not in server/core/errors.py's exception tree"
    assert f"→ {status} {code}" in line.group(0)
