"""server.observability.prometheus_seam: the prometheus_client internals batchserve relies on, checked against
the installed version, and no other module reaching them."""

from __future__ import annotations

import ast
import bisect
import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.values import MutexValue

from server.observability import prometheus_seam
from server.observability.prometheus_seam import LoopValue, incrementer, loop_only, observer

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


# ---- the check: the seam's assumptions against the installed prometheus_client ----------------------

def check() -> list[str]:
    """What of the above the installed prometheus_client no longer has or does, one line each (empty: all there)."""
    problems = [f"prometheus_client.values.MutexValue.{name} is gone" for name in prometheus_seam.VALUE_METHODS
                if not callable(getattr(MutexValue, name, None))]
    for kind, child in _children(CollectorRegistry(auto_describe=False)).items():
        for attribute in prometheus_seam.CHILD_VALUES[kind]:
            value = getattr(child, attribute, None)
            if attribute == "_upper_bounds":
                if value != [1.0, 2.0, math.inf]:
                    problems.append(f"a {kind} child's {attribute} is {value!r}, not the sorted bounds and +Inf")
            elif attribute == "_buckets":
                if not isinstance(value, list) or len(value) != 3 or any(type(v) is not MutexValue for v in value):
                    problems.append(f"a {kind} child's {attribute} is {value!r}, not a list of MutexValue a bound")
            elif type(value) is not MutexValue:
                problems.append(f"a {kind} child's {attribute} is {type(value).__name__}, not MutexValue")
    try:
        swapped, plain = _samples(swap=True), _samples(swap=False)
    except AttributeError as error:  # e.g. prometheus_client calls a value method that LoopValue lacks
        return [*problems, f"a metric update or scrape failed: {error!r}"]
    problems += [f"{name}{labels} is {value} with LoopValues, {plain.get((name, labels))} without"
                 for (name, labels), value in swapped.items() if plain.get((name, labels)) != value]
    return problems


def _children(registry: CollectorRegistry) -> dict[str, Any]:
    return {"Counter": Counter("seam", "", ["l"], registry=registry).labels("a"),
            "Gauge": Gauge("seam_gauge", "", ["l"], registry=registry).labels("a"),
            "Histogram": Histogram("seam_seconds", "", ["l"], buckets=(1.0, 2.0), registry=registry).labels("a")}


def _samples(swap: bool) -> dict[tuple[str, str], float]:
    """The samples a scrape reads after the same updates, made through LoopValues (``swap``) or not."""
    registry = CollectorRegistry(auto_describe=False)
    counter, gauge, histogram = _children(registry).values()
    if swap:
        inc, observe, gauge = incrementer(counter), observer(histogram), loop_only(gauge)
    else:
        inc, observe = counter.inc, histogram.observe
    inc(2)
    counter.inc(3)
    gauge.set(4)
    gauge.inc(1)
    for amount in (0.5, 1.0, 1.5, 2.0, 3.0):  # on a bound, between, above the last finite one
        observe(amount)
    histogram.observe(0.7)
    return {(s.name, str(sorted(s.labels.items()))): s.value for metric in registry.collect()
            for s in metric.samples if not s.name.endswith("_created")}
