"""One /metrics for a server of several processes: the front ends' series summed, the engine's added.

The front ends write their request-path series through prometheus_client's
multiprocess mode (a file per process, so a killed front end's counts stay in
the totals); the engine keeps the batch, queue and model series in its own
registry and hands them over on each scrape. Series present in both (the
rejection counters) are summed. The engine also reports every process's
``process_*`` series, each labelled with its own role and index
(server/observability/process_series.py), so none is ever summed with another.
Exemplars survive the merge: a bucket keeps the newest of those its processes
hold (the engine's, in its samples; the front ends', from their files:
exemplars.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Exemplar, Sample

from server.observability.exemplars import SampleKey, read_exemplars


def merge(families: Iterable[Metric], exemplars: dict[SampleKey, Exemplar] | None = None) -> list[Metric]:
    """Families of the same name become one; samples with the same name and labels are summed
    (``_created`` takes the earliest), keeping the newest exemplar of theirs and ``exemplars``'."""
    merged: dict[str, tuple[Metric, dict[tuple[str, tuple[tuple[str, str], ...]], Sample]]] = {}
    for family in families:
        if family.name not in merged:
            merged[family.name] = (Metric(family.name, family.documentation, family.type, family.unit), {})
        into = merged[family.name][1]
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            seen = into.get(key)
            if seen is None:
                into[key] = sample
            elif sample.name.endswith("_created"):
                into[key] = seen._replace(value=min(seen.value, sample.value))
            else:
                into[key] = seen._replace(value=seen.value + sample.value,
                                          exemplar=_newer(seen.exemplar, sample.exemplar))
    for key, exemplar in (exemplars or {}).items():  # a front end's, for a bucket of its family
        if key[0].endswith("_bucket") and key[0][:-7] in merged:
            into = merged[key[0][:-7]][1]
            seen = into.get(key)
            if seen is not None:
                into[key] = seen._replace(exemplar=_newer(seen.exemplar, exemplar))
    for family, into in merged.values():
        family.samples = _grouped(family.type, list(into.values()))
    return [family for family, _ in merged.values()]


def _grouped(kind: str, samples: list[Sample]) -> list[Sample]:
    """The samples of each label set together (OpenMetrics refuses a family whose ``_created`` of one label set
    comes after another's ``_total``), in the order each set first appears; within a set, as they came."""
    drop = {"histogram": "le", "gaugehistogram": "le", "summary": "quantile"}.get(kind)
    first: dict[tuple[tuple[str, str], ...], int] = {}

    def group(sample: Sample) -> int:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != drop))
        return first.setdefault(labels, len(first))

    return sorted(samples, key=group)


def _newer(one: Exemplar | None, other: Exemplar | None) -> Exemplar | None:
    if one is None or (other is not None and float(one.timestamp or 0.0) < float(other.timestamp or 0.0)):
        return other
    return one


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def merged_registry(multiprocess_dir: str, engine_families: Iterable[Metric]) -> CollectorRegistry:
    """A registry to expose once: every front end's series and the engine's, merged."""
    frontends = MultiProcessCollector(None, path=multiprocess_dir).collect()  # type: ignore[arg-type]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(merge([*frontends, *engine_families], read_exemplars(multiprocess_dir))))
    return registry
