"""The log line's two shapes: JSON (one object a line, with the process's role and the request's fields) and
text; and the request log's choice of which requests get a line."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from server.core.request import InferRequest
from server.observability import access_log, logs
from server.observability.access_log import RequestLog, caller_id


@pytest.fixture
def identity() -> Iterator[None]:
    saved = dict(logs._identity)
    yield
    logs._identity.update(saved)


def _record(message: str, fields: dict[str, Any] | None = None, exc_info: Any = None) -> logging.LogRecord:
    record = logging.LogRecord("server.app", logging.WARNING, __file__, 1, message, (), exc_info)
    record.created = 1_700_000_000.25
    if fields is not None:
        record.fields = fields
    return record


def test_a_json_line_is_one_object_with_the_process_and_the_fields(identity: None) -> None:
    logs._identity.update(role="frontend", index="1")
    try:
        raise ValueError("first\nsecond")
    except ValueError:
        record = _record("two\nlines", {"request_id": "r1", "status": 503}, sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    document = orjson.loads(line)
    assert {k: document[k] for k in ("time", "level", "logger", "message", "role", "index", "request_id",
                                     "status")} == {
        "time": "2023-11-14T22:13:20.250Z", "level": "warning", "logger": "server.app", "message": "two\nlines",
        "role": "frontend", "index": "1", "request_id": "r1", "status": 503}
    assert document["pid"] == record.process
    assert document["exception"].startswith("Traceback") and "ValueError: first\nsecond" in document["exception"]


def test_a_text_line_names_the_role_and_appends_the_fields(identity: None) -> None:
    logs._identity.update(role="worker", index="syn/1/cpu:0")
    text = logs.TextFormatter().format(_record("request", {"model": "syn", "status": 200, "reason": None}))
    assert text.endswith(" WARNING worker syn/1/cpu:0 server.app: request model=syn status=200")
    logs._identity.update(role="server", index="0")
    assert " WARNING server.app: plain" in logs.TextFormatter().format(_record("plain"))


def test_a_spawned_process_logs_as_its_parent_configured(identity: None, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    monkeypatch.setenv("BATCHSERVE_LOG_FORMAT", "json")
    monkeypatch.setenv("BATCHSERVE_LOG_LEVEL", "warning")
    level = root.level
    try:
        logs.configure_inherited("worker", logs.worker_index("syn", 1, "batchserve-worker-gpu:0-1"))
        logging.getLogger("x").info("dropped")
        logging.getLogger("x").warning("kept")
    finally:
        root.setLevel(level)
        logging.captureWarnings(False)
    [line] = capsys.readouterr().err.splitlines()
    assert orjson.loads(line) | {"time": "", "pid": 0} == {
        "time": "", "level": "warning", "logger": "x", "message": "kept", "role": "worker", "index": "syn/1/gpu:0-1",
        "pid": 0}


@pytest.mark.parametrize("headers", [
    [(b"host", b"x"), (b"x-request-id", b"abc")],  # HTTP: lower-case bytes
    (("user-agent", "grpc"), ("x-request-id", "abc")),  # gRPC metadata
    lambda: (("x-request-id", "abc"),),  # gRPC: the context's invocation_metadata, read only now
])
def test_the_callers_id_is_read_from_headers_or_metadata(headers: Any) -> None:
    assert caller_id(headers) == "abc"


def test_a_callers_id_is_cut_to_its_limit() -> None:
    assert caller_id([(b"x-request-id", b"a" * 1000)]) == "a" * access_log.MAX_ID_CHARS
    assert caller_id([(b"x-request-id", b"")]) is None and caller_id(None) is None


def _request(**fields: Any) -> InferRequest:
    return InferRequest("v2", "syn", None, None, None, **fields)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sampling_off_never_draws_nor_writes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(access_log, "random", lambda: pytest.fail("drew a random number with sampling off"))
    caplog.set_level(logging.DEBUG, logger="batchserve.access")
    request = _request()
    RequestLog(0.0, 10.0).record(request, 200, 0.01)
    assert caplog.records == [] and request.request_id is None


def test_a_sample_draws_each_request(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    draws = iter([0.3, 0.1])
    monkeypatch.setattr(access_log, "random", lambda: next(draws))
    caplog.set_level(logging.INFO, logger="batchserve.access")
    log = RequestLog(0.2, 10.0)
    kept, dropped = _request(headers=[(b"x-request-id", b"kept")]), _request(headers=[(b"x-request-id", b"no")])
    log.record(dropped, 200, 0.01)
    log.record(kept, 200, 0.0125)
    [record] = caplog.records
    assert record.fields == {"request_id": "kept", "model": "syn", "protocol": "v2", "status": 200,  # type: ignore[attr-defined]
                             "total_ms": 12.5}
    assert (kept.request_id, dropped.request_id) == ("kept", None)


def test_failures_are_written_once_per_interval_per_status_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    from batching import QueueFull
    from server.admission.auth import Unauthorized
    from server.core.errors import BadRequest

    caplog.set_level(logging.INFO, logger="batchserve.access")
    clock = Clock()
    log = RequestLog(0.0, 10.0, clock)
    for _ in range(3):
        log.record(_request(), 503, 0.001, QueueFull("queue full"))
    log.record(_request(), 400, 0.001, BadRequest("bad"))
    clock.now += 10.0
    log.record(_request(), 503, 0.001, QueueFull("queue full"))
    log.refused(QueueFull("queue full"), model="syn")  # held back: one line of each per interval
    log.refused(Unauthorized("no token"), model="syn")
    assert [(r.getMessage(), r.fields["status"], r.fields["suppressed"], r.levelname)  # type: ignore[attr-defined]
            for r in caplog.records] == [("request failed: queue_full", 503, 0, "WARNING"),
                                         ("request failed: invalid", 400, 0, "INFO"),
                                         ("request failed: queue_full", 503, 2, "WARNING"),
                                         ("request refused: unauthenticated", 401, 0, "INFO")]
    assert caplog.records[-1].fields == {"model": "syn", "status": 401, "reason": "unauthenticated",  # type: ignore[attr-defined]
                                         "error": "no token", "suppressed": 0}


def test_a_message_json_cannot_encode_still_makes_one_line(identity: None) -> None:
    line = logs.JsonFormatter().format(_record("bad \udcff byte"))
    assert "\n" not in line and json.loads(line)["message"] == "bad \udcff byte"
