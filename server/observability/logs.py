"""Every process's log: text for people, or one JSON object per line for a log pipeline (``--log-format``).

Each process configures the root logger once, at its start, with its role: ``server`` (one process does
everything), ``supervisor``, ``frontend`` (index N), ``engine`` or ``worker`` (index ``model/version/device``).
uvicorn's loggers propagate to the same handler (it is given no logging config of its own), so every line a
process writes through ``logging`` has one shape. A JSON line holds ``time`` (UTC, RFC 3339, milliseconds),
``level``, ``logger``, ``message``, ``role``, ``index`` and ``pid``, then the record's ``fields`` (a dict
passed as ``extra={"fields": ...}``: the request lines' request id, model, status, durations; tracing adds
its ids there), then ``exception`` when there is one. Python warnings and uncaught exceptions go through the
same handler, so stderr stays one object per line.

Spawned worker processes inherit the format and level through the environment (``BATCHSERVE_LOG_FORMAT``,
``BATCHSERVE_LOG_LEVEL``: the settings' own variables), set here when a process configures its logging.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

import orjson

FORMATS = ("text", "json")
_FORMAT_ENV, _LEVEL_ENV = "BATCHSERVE_LOG_FORMAT", "BATCHSERVE_LOG_LEVEL"
_identity = {"role": "server", "index": "0"}


def process_role() -> tuple[str, str]:
    """This process's role and index, as its log lines and its ``process_*`` series name it."""
    return _identity["role"], _identity["index"]


def worker_index(model: str, version: object, process_name: str) -> str:
    """``model/version/device`` (``-instance`` too, with several instances per device): a worker's index in its
    log lines and series, from its process's name (the pool's ``batchserve-worker-DEVICE[-INSTANCE]``)."""
    return f"{model}/{version}/{process_name.removeprefix('batchserve-worker-')}"


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a message's or traceback's newlines are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _utc(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "message": record.getMessage(), "role": _identity["role"],
                                "index": _identity["index"], "pid": record.process}
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        try:
            return orjson.dumps(line, default=str).decode()
        except orjson.JSONEncodeError:  # a lone surrogate in a message: the stdlib escapes it
            return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL role logger: message key=value ...``; the role is left out in a single process."""

    def __init__(self) -> None:
        role, index = process_role()
        tag = {"server": "", "supervisor": "supervisor ", "engine": "engine ", "frontend": f"frontend{index} ",
               "worker": f"worker {index} "}.get(role, f"{role} ")
        super().__init__(f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        if not fields:
            return text
        head, newline, tail = text.partition("\n")  # fields on the message's line, before any traceback
        return head + "".join(f" {k}={v}" for k, v in fields.items() if v is not None) + newline + tail


def configure_logging(level: str, log_format: str, role: str, index: int | str = 0) -> None:
    """The root logger of this process writes ``log_format`` lines at ``level`` to stderr, naming ``role``."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {FORMATS}")
    _identity.update(role=role, index=str(index))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    os.environ[_FORMAT_ENV], os.environ[_LEVEL_ENV] = log_format, level  # for spawned worker processes


def configure_inherited(role: str, index: str) -> None:
    """A spawned process's logging, as its parent configured its own (text at info when it did not)."""
    log_format = os.environ.get(_FORMAT_ENV, "text")
    level = os.environ.get(_LEVEL_ENV, "info")
    configure_logging(level if level.upper() in logging.getLevelNamesMapping() else "info",
                      log_format if log_format in FORMATS else "text", role, index)


def _log_uncaught(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("batchserve").critical("uncaught exception", exc_info=(kind, error, trace))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    logging.getLogger("batchserve").critical("uncaught exception in thread %s", getattr(args.thread, "name", "?"),
                                             exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
