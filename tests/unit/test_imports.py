"""The import graph of ``server/`` and ``batching/``, read from the code with ``ast``.

Keeps the package table in docs/architecture.md (and ../shared/DESIGN.md) true: no import
cycles, ``batching`` on stdlib and numpy only, and the layering of vocabulary, codecs,
client and runtime. Every import statement counts, lazy ones inside functions included.
"""

from __future__ import annotations

import ast
import functools
import sys
from collections.abc import Set
from importlib.util import resolve_name
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[2]
STDLIB = frozenset(sys.stdlib_module_names)


def module_name(path: str) -> str:
    parts = PurePosixPath(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(files: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the full names of everything it imports, given {relative path: source}.

    A package's ``__init__`` is a node named after the package. ``from pkg import name``
    imports the submodule ``pkg.name`` when there is one, else ``pkg`` itself.
    """
    modules = {module_name(path) for path in files}
    graph: dict[str, set[str]] = {}
    for path, source in files.items():
        module = module_name(path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(source, path)):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = resolve_name("." * node.level + (node.module or ""), package)
                subs = (f"{base}.{alias.name}" for alias in node.names)
                targets.update(sub if sub in modules else base for sub in subs)
        graph[module] = targets - {module}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The cycles among the graph's own nodes (one per back edge of a depth-first walk)."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> None:
        path.append(node)
        for target in sorted(graph[node] & graph.keys()):
            if target in path:
                cycles.append([*path[path.index(target):], target])
            elif target not in done:
                visit(target)
        path.pop()
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return cycles


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def foreign_imports(graph: dict[str, set[str]], importer: str, allowed: Set[str]) -> list[str]:
    """``a -> b`` for each import in or under ``importer`` whose top-level package is not allowed."""
    return sorted(f"{m} -> {t}" for m, ts in graph.items() if within(m, importer)
                  for t in ts if t.partition(".")[0] not in allowed)


def forbidden_imports(graph: dict[str, set[str]], importers: list[str], forbidden: list[str]) -> list[str]:
    """``a -> b`` for each module in or under one of ``importers`` importing one in or under ``forbidden``."""
    return sorted(f"{m} -> {t}" for m, ts in graph.items() if any(within(m, i) for i in importers)
                  for t in ts if any(within(t, f) for f in forbidden))


INNER_ROLES = ["server.core", "server.admission", "server.models", "server.observability", "server.runtime",
               "server.ipc", "server.codecs"]
OUTER_ROLES = ["server.http", "server.grpc", "server.multiprocess", "server.tools", "server.app"]
WIRE = ["server.grpc.protos", "server.grpc.tensors"]  # the gRPC messages and TensorProto <-> numpy: no front-end
# code (they import none of server.grpc's serving modules, and test_layering keeps runtime and models out of them),
# read by the client's transport and by the runtime's warm-up records (TF Serving's PredictionLog)


@functools.cache
def project_graph() -> dict[str, set[str]]:
    files = {p.relative_to(ROOT).as_posix(): p.read_text() for package in ("server", "batching")
             for p in sorted((ROOT / package).rglob("*.py"))}
    graph = import_graph(files)
    # Guard against a vacuous pass: the walk must see package inits, relative and lazy imports.
    assert "server.core.vocabulary" in graph["server.runtime.backend"]
    assert "server" in graph["server.http.kserve"]  # from .. import __version__
    assert "server.http.server" in graph["server.tools.cli"]  # lazy, inside _serve
    return graph


def test_no_import_cycles() -> None:
    cycles = find_cycles(project_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_batching_imports_only_stdlib_and_numpy() -> None:
    bad = foreign_imports(project_graph(), "batching", STDLIB | {"numpy", "batching"})
    assert not bad, "batching/ must import only the standard library and numpy:\n" + "\n".join(bad)


def test_layering() -> None:
    graph = project_graph()
    bad = foreign_imports(graph, "server.core.vocabulary", STDLIB | {"numpy"})
    bad += forbidden_imports(graph, ["server.codecs", "server.client", "server.grpc.transport", "server.grpc.tensors",
                                     "server.grpc.protos"],
                             ["server.runtime", "server.models.repository", "server.models.catalog", "server.settings",
                              "server.models.config"])
    bad += forbidden_imports(graph, ["server.runtime"],
                             ["server.settings", "server.models.config", "server.models.repository",
                              "server.models.catalog", "server.http", "server.app"])
    # the roles: the request core, admission, models, observability, runtime, IPC and codecs never reach
    # out to a front end (HTTP, gRPC), the process layer, the tools or the app that wires them, but for
    # the wire modules (WIRE), which themselves import nothing else of those
    bad += [line for line in forbidden_imports(graph, INNER_ROLES + WIRE, OUTER_ROLES)
            if not any(within(line.rpartition(" -> ")[2], wire) for wire in WIRE)]
    assert not bad, "imports that break the package table in docs/architecture.md:\n" + "\n".join(bad)


def test_the_checks_can_fail() -> None:
    files = {
        "pkg/__init__.py": "from .a import run\n",
        "pkg/a.py": "import numpy\nfrom . import b\n\ndef run():\n    pass\n",
        "pkg/b.py": "def later():\n    from .a import run\n    return run\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from .. import version\nimport fastapi.routing\n",
    }
    graph = import_graph(files)
    assert graph["pkg.a"] == {"numpy", "pkg.b"}  # `from . import b` is pkg.b, not pkg
    assert graph["pkg.sub.c"] == {"pkg", "fastapi.routing"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]  # found through the lazy import
    assert find_cycles(import_graph({**files, "pkg/b.py": "def later():\n    pass\n"})) == []
    assert foreign_imports(graph, "pkg", STDLIB | {"numpy", "pkg"}) == ["pkg.sub.c -> fastapi.routing"]
    assert forbidden_imports(graph, ["pkg.sub"], ["pkg"]) == ["pkg.sub.c -> pkg"]
    assert forbidden_imports(graph, ["pkg.b"], ["pkg.sub"]) == []
