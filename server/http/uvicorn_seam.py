"""uvicorn's internals, in one place: what the in-place inference protocol relies on.

server/http/protocol.py subclasses uvicorn's ``HttpToolsProtocol`` (undocumented: uvicorn's API is its
``Config`` and ``Server``) and reads and writes its per-connection and per-request state. That state is named
here, so a reader sees the whole list, and :func:`check` verifies it against the installed uvicorn
(tests/unit/test_uvicorn_seam.py), naming each name that moved:

- ``HttpToolsProtocol`` and ``STATUS_LINE`` (status code -> ``b"HTTP/1.1 200 OK\\r\\n"``), imported from
  ``uvicorn.protocols.http.httptools_impl``;
- ``METHODS``: the methods the subclass extends (calling ``super()``) or calls, with their positional
  arguments; uvicorn answers a parser error, one raised by a parser callback included, with
  ``send_400_response``;
- ``STATE``: the instance attributes it reads or writes, and ``NESTED``: what it uses of some of them
  (``flow``, ``parser``, ``server_state``, ``tasks``). ``headers`` holds (lower-cased name, value) pairs,
  ``url`` the request target's bytes, both complete when ``on_headers_complete`` runs;
- ``CYCLE``: the attributes uvicorn's own methods read or write of ``self.cycle``, which the subclass sets to
  its own cycles (its ``_Cycle`` has them). ``CYCLE_INTERCEPTED``: the methods whose override never hands one
  of its cycles to uvicorn's.

The subclass uses these as plain attributes of ``self`` (no accessor on the request path); the unit test
also reads protocol.py and fails when it uses a name of uvicorn's that this module does not list.
pyproject.toml bounds uvicorn below its next major version.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["CYCLE", "CYCLE_INTERCEPTED", "METHODS", "NESTED", "STATE", "STATUS_LINE", "HttpToolsProtocol", "check"]

METHODS = {
    # parser callbacks (httptools calls them while data_received feeds the parser)
    "on_message_begin": 0, "on_header": 2, "on_headers_complete": 0, "on_body": 1, "on_message_complete": 0,
    # asyncio.Protocol callbacks, as uvicorn implements them
    "data_received": 1, "connection_lost": 1, "resume_writing": 0,
    # uvicorn's own
    "send_400_response": 1,  # extended: a 431 for headers over the limits
    "on_response_complete": 0,  # called once an answer is written: keep-alive timer, pipelined requests, counts
    "_unset_keepalive_if_required": 0,  # called when a request begins: the connection is not idle
    "shutdown": 0,  # extended: graceful shutdown answers a request in flight, then closes
}
STATE = ("cycle", "headers", "url", "expect_100_continue", "parser", "transport", "flow", "loop", "tasks",
         "server_state")
NESTED = {
    "flow": ("write_paused", "pause_reading", "resume_reading"),  # uvicorn's FlowControl
    "parser": ("get_method", "should_upgrade", "should_keep_alive"),  # httptools.HttpRequestParser
    "server_state": ("default_headers",),  # [(name, value)] bytes, the Server and Date headers
    "tasks": ("add", "discard"),  # the server's tasks: shutdown waits for them
}
CYCLE = ("disconnected", "keep_alive", "message_event", "response_complete")
CYCLE_INTERCEPTED = ("on_body", "on_message_complete")


def check() -> list[str]:
    """What of the above the installed uvicorn no longer has or does, one line each (empty: all there)."""
    problems: list[str] = []
    for name, arity in METHODS.items():
        method = getattr(HttpToolsProtocol, name, None)
        if not callable(method):
            problems.append(f"HttpToolsProtocol.{name} is gone")
            continue
        positional = [p for p in inspect.signature(method).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][1:]
        if len(positional) != arity:
            problems.append(f"HttpToolsProtocol.{name} takes {len(positional)} arguments, not {arity}")
    if STATUS_LINE.get(200) != b"HTTP/1.1 200 OK\r\n" or not all(code in STATUS_LINE for code in range(100, 600)):
        problems.append("STATUS_LINE is no longer status code -> b'HTTP/1.1 <code> <phrase>\\r\\n' for 100..599")
    problems += _check_state()
    problems += [f"HttpToolsProtocol.{method} uses cycle.{name}, which CYCLE does not list"
                 for method, name in cycle_uses() if name not in CYCLE]
    return problems


def cycle_uses() -> list[tuple[str, str]]:
    """(method, attribute) for each attribute of ``self.cycle`` (or a local bound to it) that uvicorn's
    methods use, except the CYCLE_INTERCEPTED ones, read from the installed uvicorn's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(HttpToolsProtocol)))
    uses: list[tuple[str, str]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or function.name in CYCLE_INTERCEPTED:
            continue
        aliases = {target.id for node in ast.walk(function) if isinstance(node, ast.Assign) and _is_cycle(node.value)
                   for target in node.targets if isinstance(target, ast.Name)}
        uses += sorted({(function.name, node.attr) for node in ast.walk(function) if isinstance(node, ast.Attribute)
                        and (_is_cycle(node.value) or (isinstance(node.value, ast.Name) and node.value.id in aliases))})
    return uses


def _is_cycle(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "cycle" and isinstance(node.value, ast.Name)
            and node.value.id == "self")


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Probe(HttpToolsProtocol):
    """Records the state uvicorn built by the end of a request's headers, and the parser errors it answers."""

    seen: dict[str, Any]
    refused: list[str]

    def on_header(self, name: bytes, value: bytes) -> None:
        if name == b"X-Refuse":
            raise ValueError("refused in a parser callback")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.seen = {name: getattr(self, name, _MISSING) for name in STATE}

    def send_400_response(self, msg: str) -> None:
        self.refused.append(msg)


_MISSING = object()


def _probe(loop: asyncio.AbstractEventLoop, request: bytes) -> _Probe:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    protocol = _Probe(config=Config(app, log_config=None, lifespan="off"), server_state=ServerState(),
                      app_state={}, _loop=loop)
    protocol.refused = []
    protocol.connection_made(_Transport())
    protocol.data_received(request)
    return protocol


def _check_state() -> list[str]:
    loop = asyncio.new_event_loop()
    try:
        probe = _probe(loop, b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
                             b"Expect: 100-continue\r\n\r\n")
        refused = _probe(loop, b"POST / HTTP/1.1\r\nX-Refuse: 1\r\n\r\n").refused
    except Exception as error:  # the constructor, connection_made or a callback moved
        return [f"HttpToolsProtocol(config=, server_state=, app_state=, _loop=) no longer parses a request: {error!r}"]
    finally:
        loop.close()
    seen = getattr(probe, "seen", None)
    if seen is None:
        return ["HttpToolsProtocol no longer calls on_headers_complete from data_received"]
    problems = [f"HttpToolsProtocol has no instance attribute {name}" for name in STATE if seen[name] is _MISSING]
    expected = {"url": b"/v2/models/m/infer?x=1", "expect_100_continue": True, "loop": loop, "cycle": None,
                "headers": [(b"host", b"h"), (b"content-length", b"2"), (b"expect", b"100-continue")]}
    problems += [f"HttpToolsProtocol.{name} is {seen[name]!r} once the headers are in, not {value!r}"
                 for name, value in expected.items() if seen[name] is not _MISSING and seen[name] != value]
    problems += [f"HttpToolsProtocol.{name}.{attribute} is gone" for name, attributes in NESTED.items()
                 if seen[name] is not _MISSING for attribute in attributes if not hasattr(seen[name], attribute)]
    if seen["server_state"] is not _MISSING and not isinstance(getattr(seen["server_state"], "default_headers",
                                                                       None), list):
        problems.append("HttpToolsProtocol.server_state.default_headers is no longer a list of (name, value)")
    if not refused:
        problems.append("HttpToolsProtocol no longer answers a parser callback's error with send_400_response")
    return problems
