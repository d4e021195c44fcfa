"""server.http.uvicorn_seam: the uvicorn internals the in-place inference protocol relies on, checked against
the installed version, and the seam's list checked against what server/http/protocol.py uses."""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
from pathlib import Path
from typing import Any

import pytest

from server.http import uvicorn_seam
from server.http.protocol import _Cycle
from server.http.uvicorn_seam import CYCLE, METHODS, NESTED, STATE, STATUS_LINE, HttpToolsProtocol

PROTOCOL = Path(__file__).resolve().parents[2] / "server/http/protocol.py"


def test_installed_uvicorn_has_what_the_seam_relies_on() -> None:
    problems = check()
    assert not problems, ("uvicorn moved internals that server/http/uvicorn_seam.py relies on:\n"
                          + "\n".join(problems))


def test_check_names_what_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uvicorn_seam, "METHODS", {**METHODS, "on_header": 1, "_gone": 0})
    monkeypatch.setattr(uvicorn_seam, "STATE", (*STATE, "moved"))
    monkeypatch.setattr(uvicorn_seam, "NESTED", {**NESTED, "flow": ("write_paused", "drain_now")})
    monkeypatch.setattr(uvicorn_seam, "CYCLE", tuple(name for name in CYCLE if name != "keep_alive"))
    problems = check()
    for expected in ("HttpToolsProtocol.on_header takes 2 arguments, not 1", "HttpToolsProtocol._gone is gone",
                     "HttpToolsProtocol has no instance attribute moved", "HttpToolsProtocol.flow.drain_now is gone",
                     "HttpToolsProtocol.shutdown uses cycle.keep_alive, which CYCLE does not list"):
        assert expected in problems, problems


def test_the_subclass_cycle_has_what_uvicorn_uses() -> None:
    assert set(CYCLE) <= set(_Cycle.__slots__)


def _protocol_class() -> ast.ClassDef:
    tree = ast.parse(PROTOCOL.read_text(), str(PROTOCOL))
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InferenceHttpProtocol")


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def test_the_seam_lists_every_uvicorn_name_the_subclass_uses() -> None:
    """Inherited names the subclass reads, writes, calls or extends: exactly the seam's METHODS and STATE."""
    cls = _protocol_class()
    own = {n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    own |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    own |= {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    attributes = [n for n in ast.walk(cls) if isinstance(n, ast.Attribute)]
    used = {n.attr for n in attributes if _is_self(n.value)} - own
    used |= {n.attr for n in attributes if isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name)
             and n.value.func.id == "super"}
    used |= {name for name in own if hasattr(HttpToolsProtocol, name)}  # overridden
    assert {"cycle", "on_body", "send_400_response"} <= used  # the walk sees them
    listed = set(METHODS) | set(STATE)
    assert used == listed, (f"protocol.py uses uvicorn names the seam does not list: {sorted(used - listed)}; "
                            f"the seam lists names protocol.py no longer uses: {sorted(listed - used)}")
    nested = {(n.value.attr, n.attr) for n in attributes if isinstance(n.value, ast.Attribute)
              and _is_self(n.value.value) and n.value.attr in NESTED}
    assert ("flow", "write_paused") in nested
    unlisted = sorted(f"self.{outer}.{inner}" for outer, inner in nested if inner not in NESTED[outer])
    assert not unlisted, f"protocol.py uses names the seam's NESTED does not list: {unlisted}"


def test_only_the_seam_imports_uvicorn_internals() -> None:
    root = PROTOCOL.parents[2]
    bad = [f"{path.relative_to(root)}: {node.module}" for path in sorted((root / "server").rglob("*.py"))
           if path.name != "uvicorn_seam.py" for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uvicorn.protocols")]
    assert not bad, "uvicorn internals imported outside server/http/uvicorn_seam.py:\n" + "\n".join(bad)


# ---- the check: the seam's lists against the installed uvicorn --------------------------------------

def check() -> list[str]:
    """What of the above the installed uvicorn no longer has or does, one line each (empty: all there)."""
    problems: list[str] = []
    for name, arity in uvicorn_seam.METHODS.items():
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
                 for method, name in cycle_uses() if name not in uvicorn_seam.CYCLE]
    return problems


def cycle_uses() -> list[tuple[str, str]]:
    """(method, attribute) for each attribute of ``self.cycle`` (or a local bound to it) that uvicorn's
    methods use, except the CYCLE_INTERCEPTED ones, read from the installed uvicorn's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(HttpToolsProtocol)))
    uses: list[tuple[str, str]] = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef) or function.name in uvicorn_seam.CYCLE_INTERCEPTED:
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
        self.seen = {name: getattr(self, name, _MISSING) for name in uvicorn_seam.STATE}

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
    problems = [f"HttpToolsProtocol has no instance attribute {name}" for name in uvicorn_seam.STATE
                if seen[name] is _MISSING]
    expected = {"url": b"/v2/models/m/infer?x=1", "expect_100_continue": True, "cycle": None,
                "headers": [(b"host", b"h"), (b"content-length", b"2"), (b"expect", b"100-continue")]}
    problems += [f"HttpToolsProtocol.{name} is {seen[name]!r} once the headers are in, not {value!r}"
                 for name, value in expected.items() if seen[name] is not _MISSING and seen[name] != value]
    problems += [f"HttpToolsProtocol.{name}.{attribute} is gone" for name, attributes in uvicorn_seam.NESTED.items()
                 if seen[name] is not _MISSING for attribute in attributes if not hasattr(seen[name], attribute)]
    if seen["server_state"] is not _MISSING and not isinstance(getattr(seen["server_state"], "default_headers",
                                                                       None), list):
        problems.append("HttpToolsProtocol.server_state.default_headers is no longer a list of (name, value)")
    if not refused:
        problems.append("HttpToolsProtocol no longer answers a parser callback's error with send_400_response")
    return problems
