"""server.observability.prometheus_seam: the prometheus_client internals batchserve relies on, checked against
the installed version, and no other module reaching them."""

from __future__ import annotations

import ast
import bisect
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.values import MutexValue

from server.observability import prometheus_seam
from server.observability.prometheus_seam import LoopValue, check, incrementer, loop_only, observer

ROOT = Path(__file__).resolve().parents[2]
INTERNALS = {"_value", "_sum", "_buckets", "_upper_bounds"}


def test_installed_prometheus_client_has_what_the_seam_relies_on() -> None:
    problems = check()
    assert not problems, ("prometheus_client moved internals that server/observability/prometheus_seam.py "
                          "relies on:\n" + "\n".join(problems))


def test_check_names_what_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(prometheus_seam.CHILD_VALUES, "Counter", ("_value", "_moved"))
    monkeypatch.delattr(MutexValue, "get_exemplar")
    problems = check()
    assert "a Counter child's _moved is NoneType, not MutexValue" in problems
    assert "prometheus_client.values.MutexValue.get_exemplar is gone" in problems


def test_check_sees_an_observation_rule_that_differs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_seam, "bisect_left", bisect.bisect_right)  # amount < bound, not <=
    problems = check()
    assert any(p.startswith("seam_seconds_bucket[('l', 'a'), ('le', '1.0')] is ") for p in problems), problems


def test_loop_values_keep_counts_and_fall_back_for_other_values() -> None:
    registry = CollectorRegistry(auto_describe=False)
    counter = Counter("c", "", ["l"], registry=registry).labels("a")
    counter.inc(5)
    inc = incrementer(counter)
    assert type(counter._value) is LoopValue and counter._value.get() == 5  # counted so far kept
    inc(2)
    assert registry.get_sample_value("c_total", {"l": "a"}) == 7
    histogram = Histogram("h", "", buckets=(1.0,), registry=registry)
    other = histogram._sum = object()  # not prometheus_client's in-process value (as a multiprocess file's)
    assert loop_only(histogram)._sum is other
    assert observer(histogram) == histogram.observe  # its own, locked, method


def _internal_uses(path: Path) -> list[str]:
    """``line: name`` for each use of a prometheus_client internal (on anything but ``self``) or import of
    ``prometheus_client.values`` in a module."""
    tree = ast.parse(path.read_text(), str(path))
    uses = [f"{node.lineno}: .{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr in INTERNALS and not (isinstance(node.value, ast.Name) and node.value.id == "self")]
    uses += [f"{node.lineno}: import {node.module}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             and (node.module or "").startswith("prometheus_client.values")]
    return uses


def test_only_the_seam_reaches_prometheus_client_internals() -> None:
    seam = ROOT / "server/observability/prometheus_seam.py"
    assert _internal_uses(seam)  # the walk sees them where they are
    bad = [f"{path.relative_to(ROOT)}:{use}" for path in sorted((ROOT / "server").rglob("*.py")) if path != seam
           for use in _internal_uses(path)]
    assert not bad, "prometheus_client internals outside prometheus_seam.py:\n" + "\n".join(bad)
