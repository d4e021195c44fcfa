"""Messages between a front end and the engine, one class each; both sides build and read these.

Every message is a NamedTuple whose last field, ``kind``, names it. It crosses
the channel as the plain tuple of its fields (pickling a tuple costs a fraction
of pickling a class instance: these go with every request), and ``dispatcher``
turns the tuple back into its class on the other side, with no copy of a field.
Tensors never ride here when they fit the arenas: a message names a slot and a
layout (``server.ipc.layout``); string tensors ride as numpy object arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from server.core.errors import error_class
from server.ipc.layout import Layout
from server.models.catalog import ModelState, VersionDescription
from server.models.config import ModelConfig


class Hello(NamedTuple):
    """The first message on a connection: which front end, and the arena its request tensors are in."""

    frontend: int  # its index among the front ends
    pid: int
    arena: str
    kind: Literal["hello"] = "hello"


class Submit(NamedTuple):
    """One queue entry: a request, or a group of ``members`` requests' rows, at ``layout`` in the front
    end's arena (at slot ``offset`` when there are numeric tensors, which the front end frees on the answer)."""

    rid: int
    model: str
    version: int
    layout: Layout
    objects: dict[str, np.ndarray]  # string tensors
    deadline: float | None  # time.monotonic(), which the engine's batcher clock reads too
    priority: int
    members: int
    signature: str = ""  # the signature's batcher ("": the default's)
    trace: str | None = None  # a traced request's span (W3C traceparent; a group never is); "": logged; else None
    kind: Literal["submit"] = "submit"


class Cancel(NamedTuple):
    """The client left: take the request off its queue. It is still answered (with an Error)."""

    rid: int
    kind: Literal["cancel"] = "cancel"


class Free(NamedTuple):
    """Slots of the engine's output arena the front end has copied out (every answer of one turn)."""

    offsets: list[int]
    kind: Literal["free"] = "free"


class Sync(NamedTuple):
    """Scan the repository now; answered with a Reply once done."""

    rid: int
    kind: Literal["sync"] = "sync"


class Scrape(NamedTuple):
    """The engine's metric families (batch, queue and model series), or with ``stats`` its statistics
    table (server/observability/model_stats.py), answered with a Reply."""

    rid: int
    stats: bool = False
    kind: Literal["scrape"] = "scrape"


class Index(NamedTuple):
    """The repository API's index, answered with a Reply."""

    rid: int
    ready_only: bool
    kind: Literal["index"] = "index"


class Load(NamedTuple):
    """The repository API's load (with model.yaml keys to apply, if any), answered with a Reply or an Error."""

    rid: int
    name: str
    config: dict[str, object] | None
    kind: Literal["load"] = "load"


class Unload(NamedTuple):
    rid: int
    name: str
    kind: Literal["unload"] = "unload"


class Welcome(NamedTuple):
    """The answer to Hello: the arena the engine writes this front end's outputs into."""

    arena: str
    kind: Literal["welcome"] = "welcome"


class CatalogVersion(NamedTuple):
    """One model version as a front end routes and describes it (no batcher, no workers)."""

    name: str
    version: int
    path: Path
    stamp: float
    state: ModelState
    error: str | None
    config: ModelConfig
    description: VersionDescription | None


class Catalog(NamedTuple):
    """The engine's whole catalog, sent on connection and whenever it changes. ``scanned`` is false
    until the engine's first load of the repository has finished."""

    scanned: bool
    versions: list[CatalogVersion]
    configs: dict[str, ModelConfig | None]
    config_errors: dict[str, str]
    empty_is_ready: bool
    strict_readiness: bool = True
    kind: Literal["catalog"] = "catalog"


class Result(NamedTuple):
    """A Submit's outputs: numeric ones at ``layout`` in the output arena's slot ``offset`` (the front
    end frees it with Free), string ones in ``objects``; every output rides in ``objects`` and
    ``offset`` is None when the arena was full."""

    rid: int
    offset: int | None
    layout: Layout
    objects: dict[str, np.ndarray]
    # a traced or logged request's: its batch's rows, its queue wait and the batch's compute seconds (its span and
    # line say), else None
    batch: tuple[int | None, float | None, float | None] | None = None
    kind: Literal["result"] = "result"


class Error(NamedTuple):
    """Any request's failure (a Submit's, a control call's), for the front end to raise as the same
    type: its class name, message and Retry-After seconds, if any."""

    rid: int
    error_type: str
    text: str
    retry_after: float | None
    kind: Literal["error"] = "error"

    @classmethod
    def of(cls, rid: int, error: BaseException) -> Error:
        return cls(rid, type(error).__name__, str(error), getattr(error, "retry_after", None))


_MODEL_ERRORS: dict[str, type[BaseException]] = {}


def rebuild_error(kind: str, text: str, retry_after: float | None = None) -> BaseException:
    """An ``Error``'s exception as the same type on this side (any class in server/core/errors.py's table), so
    errors map to the same status, message and Retry-After."""
    cls = error_class(kind)
    if cls is None:  # the model's own failure: keep its type name for the 500 message
        cls = _MODEL_ERRORS.setdefault(kind, type(kind, (RuntimeError,), {}))
    error = cls(text)
    if retry_after is not None:
        error.retry_after = retry_after  # type: ignore[attr-defined]
    return error


class Reply(NamedTuple):
    """A control request's answer (Sync, Scrape, Index, Load, Unload): its value, None when it has none."""

    rid: int
    value: Any
    kind: Literal["reply"] = "reply"


ToEngine = Hello | Submit | Cancel | Free | Sync | Scrape | Index | Load | Unload
Call = Sync | Scrape | Index | Load | Unload  # a control request, answered with a Reply or an Error
Answered = Submit | Call  # what the engine answers, by its rid
ToFrontEnd = Welcome | Catalog | Result | Error | Reply


class UnknownMessage(RuntimeError):
    """The peer sent something that is not a message of this module (a version mismatch, a stray writer)."""


def dispatcher(handlers: Mapping[type[Any], Callable[[Any], None]]) -> Callable[[tuple[Any, ...]], None]:
    """A channel's receiver: each wire tuple, as its message class, to the handler for that class."""
    _new = tuple.__new__
    table = {cls._field_defaults["kind"]: (cls, handler) for cls, handler in handlers.items()}

    def receive(wire: tuple[Any, ...]) -> None:
        try:
            cls, handler = table[wire[-1]]
        except (KeyError, IndexError, TypeError):
            raise UnknownMessage(f"not a message this side handles: {wire!r:.200}") from None
        handler(_new(cls, wire))

    return receive
