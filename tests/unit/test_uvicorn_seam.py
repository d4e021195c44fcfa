"""server.http.uvicorn_seam: the uvicorn internals the in-place inference protocol relies on, checked against
the installed version, and the seam's list checked against what server/http/protocol.py uses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from server.http import uvicorn_seam
from server.http.protocol import _Cycle
from server.http.uvicorn_seam import CYCLE, METHODS, NESTED, STATE, HttpToolsProtocol, check

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
