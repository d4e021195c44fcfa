"""prometheus_client's internals, in one place: the lock-free metric values of the request path.

prometheus_client keeps each labelled child's numbers in value objects (``prometheus_client.values.MutexValue``:
a float behind a lock) on undocumented attributes of the child. For children that only the event loop's thread
updates, batchserve swaps those values for :class:`LoopValue` (the same interface, no lock) and updates them
directly (server/observability/metrics.py says which children). This module is the only place in ``server/``
that reads or writes those internals; what it relies on is listed below and verified against the installed
prometheus_client by tests/unit/test_prometheus_seam.py, which names each one that moved:

- ``MutexValue``: the in-process value class (a multiprocess child's values are another class, left alone);
- the value interface (``VALUE_METHODS``): the methods prometheus_client calls on a value, which LoopValue has;
- ``CHILD_VALUES``: a Counter's or Gauge's child keeps its value on ``_value``; a Histogram's child its sum on
  ``_sum``, one value a bucket on ``_buckets`` and the bounds on ``_upper_bounds`` (sorted, ending in +Inf);
- a Histogram's observation goes to the first bucket whose bound holds it (amount <= bound), as :func:`observer`
  does, and a scrape reads every value with ``get()``: the same updates read the same with LoopValues as without;
- a bucket's exemplar is its value's (``set_exemplar``, read by a scrape with ``get_exemplar``), as
  ``Histogram.observe(amount, exemplar)`` sets it; a multiprocess value keeps none (:func:`keep_exemplar`, which
  names the bucket's sample from the histogram's ``_name`` and ``_labelnames``).

Where an upgrade moves one of them, the children keep prometheus_client's own (locked) values and methods:
slower, still correct. pyproject.toml bounds prometheus-client below its next major version.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString
from prometheus_client.values import MutexValue

VALUE_METHODS = ("inc", "set", "set_exemplar", "get", "get_exemplar")
CHILD_VALUES = {"Counter": ("_value",), "Gauge": ("_value",), "Histogram": ("_sum", "_buckets", "_upper_bounds")}


class LoopValue:
    """A metric value that only the event loop's thread updates: prometheus_client's MutexValue without its
    lock (a lock costs ~120 ns an update, two of them a histogram observation; the request path makes
    about eight updates a request). A scrape reads each value with one attribute read."""

    __slots__ = ("_exemplar", "_value")
    _multiprocess = False

    def __init__(self, value: float = 0.0) -> None:
        self._value = value
        self._exemplar: Any = None

    def inc(self, amount: float) -> None:
        self._value += amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self._value = value

    def set_exemplar(self, exemplar: Any) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self._value

    def get_exemplar(self) -> Any:
        return self._exemplar


def loop_only(child: Any) -> Any:
    """A labelled child (counter, gauge, histogram) whose values only the event loop's thread updates, with
    LoopValues for its values (counts so far kept). Multiprocess values (the front ends' files) stay as they are."""
    for attribute in ("_value", "_sum"):
        value = getattr(child, attribute, None)
        if type(value) is MutexValue:
            setattr(child, attribute, LoopValue(value.get()))
    buckets = getattr(child, "_buckets", None)
    if buckets and all(type(b) is MutexValue for b in buckets):
        child._buckets = [LoopValue(b.get()) for b in buckets]
    return child


def incrementer(child: Any) -> Callable[[float], None]:
    """``child.inc`` for a counter of ``loop_only``'s, without the wrapper's checks when its value is a LoopValue."""
    child = loop_only(child)
    value = getattr(child, "_value", None)
    return value.inc if type(value) is LoopValue else child.inc  # type: ignore[no-any-return]


def observer(child: Any) -> Callable[[float], None]:
    """``child.observe`` for a histogram of ``loop_only``'s: the sum and the first bucket that holds the amount
    (prometheus_client's rule, amount <= bound), without locks when its values are LoopValues."""
    child = loop_only(child)
    total = getattr(child, "_sum", None)
    buckets = getattr(child, "_buckets", None)
    bounds = getattr(child, "_upper_bounds", None)
    if type(total) is not LoopValue or not buckets or type(buckets[0]) is not LoopValue or not bounds:
        return child.observe  # type: ignore[no-any-return]

    def observe(amount: float) -> None:
        total._value += amount
        buckets[bisect_left(bounds, amount)]._value += 1

    return observe


def in_process(child: Any) -> bool:
    """Whether a child's value is prometheus_client's in-process one (not a multiprocess file, not swapped)."""
    return type(getattr(child, "_value", None)) is MutexValue


def keep_exemplar(histogram: Any, labels: tuple[str, ...], amount: float, exemplar: Mapping[str, str]
                  ) -> tuple[str, dict[str, str], Exemplar] | None:
    """Give the bucket of ``histogram``'s child ``labels`` that holds ``amount`` (observed already) the exemplar
    ``exemplar`` at ``amount``, as ``observe(amount, exemplar)`` would: None when done. When the bucket's value
    cannot keep one (a multiprocess file's), the bucket's sample name and labels and the exemplar, for the
    caller to keep elsewhere."""
    child = histogram.labels(*labels)
    bounds = child._upper_bounds
    index = bisect_left(bounds, amount)
    kept = Exemplar(dict(exemplar), amount, time.time())
    bucket = child._buckets[index]
    if type(bucket) in (LoopValue, MutexValue):
        bucket.set_exemplar(kept)
        return None
    sample_labels = dict(zip(histogram._labelnames, labels))
    sample_labels["le"] = floatToGoString(bounds[index])
    return f"{histogram._name}_bucket", sample_labels, kept
