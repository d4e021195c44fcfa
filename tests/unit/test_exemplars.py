"""Exemplars (a sampled request's trace id on the bucket its time fell in) through the one /metrics of several
processes: a front end's multiprocess histogram keeps none itself, so its exemplar file does; the engine's travel
in its samples; the merge keeps the newest of each bucket, and OpenMetrics shows them."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.samples import Exemplar, Sample

from server.observability.exemplars import ExemplarFile, read_exemplars
from server.observability.merge import merge, merged_registry
from server.observability.metrics import Metrics
from server.observability.prometheus_seam import observer

from ..harness import until

FRONT, ENGINE = "a" * 32, "b" * 32


def _exemplars(text: str) -> dict[str, list[tuple[dict[str, str], Exemplar]]]:
    return {family.name: [(s.labels, s.exemplar) for s in family.samples if s.exemplar is not None]
            for family in text_string_to_metric_families(text)}


async def test_front_end_and_engine_exemplars_reach_the_merged_scrape(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Metrics()  # in-process values, as in the engine
    engine.initialize("syn", "1")
    observer(engine.queue_duration.labels("syn", "1", ""))(0.003)
    engine.exemplar(engine.queue_duration, ("syn", "1", ""), 0.003, ENGINE)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # what a front end's metrics are
    front = Metrics()
    front.initialize("syn", "1")  # series both keep (counters the merge sums): still one group a label set
    observe = observer(front.request_duration.labels("syn", "1", "v2"))
    observe(0.004)
    front.exemplar(front.request_duration, ("syn", "1", "v2"), 0.004, FRONT)  # kept in its file, written shortly
    await until(lambda: read_exemplars(tmp_path), "the front end's exemplar file")
    text = generate_latest(merged_registry(str(tmp_path), list(engine.registry.collect()))).decode()
    exemplars = _exemplars(text)
    [(request_bucket, request)] = exemplars["batchserve_request_duration_seconds"]
    assert (request_bucket["le"], request.labels, request.value) == ("0.005", {"trace_id": FRONT}, 0.004)
    [(queue_bucket, queue)] = exemplars["batchserve_queue_duration_seconds"]
    assert (queue_bucket["le"], queue.labels, queue.value) == ("0.005", {"trace_id": ENGINE}, 0.003)


def test_the_merge_keeps_the_newest_exemplar_of_a_bucket(tmp_path: Path) -> None:
    def family(value: float, exemplar: Exemplar | None) -> object:
        from prometheus_client.metrics_core import Metric

        metric = Metric("h_seconds", "", "histogram")
        metric.samples = [Sample("h_seconds_bucket", {"le": "1.0"}, value, None, exemplar)]
        return metric

    old, new = Exemplar({"trace_id": "1"}, 0.5, 10.0), Exemplar({"trace_id": "2"}, 0.7, 20.0)
    for first, second in ((old, new), (new, old), (None, new), (new, None)):
        [merged] = merge([family(1, first), family(2, second)])  # type: ignore[list-item]
        assert [(s.value, s.exemplar) for s in merged.samples] == [(3, new)]
    filed = {("h_seconds_bucket", (("le", "1.0"),)): Exemplar({"trace_id": "3"}, 0.9, 30.0)}
    [merged] = merge([family(1, old)], filed)  # type: ignore[list-item]
    assert merged.samples[0].exemplar == filed[("h_seconds_bucket", (("le", "1.0"),))]


def test_exemplar_files_give_each_bucket_the_newest_of_every_front_end(tmp_path: Path) -> None:
    first, second = ExemplarFile(tmp_path), ExemplarFile(tmp_path)
    second.path = tmp_path / "exemplars_other.json"  # another front end's
    first.latest[("h_bucket", (("le", "1.0"),))] = ("h_bucket", {"le": "1.0"}, Exemplar({"trace_id": "1"}, 0.5, 10.0))
    second.latest[("h_bucket", (("le", "1.0"),))] = ("h_bucket", {"le": "1.0"}, Exemplar({"trace_id": "2"}, 0.6, 11.0))
    first.write()
    second.write()
    (tmp_path / "exemplars_broken.json").write_text("[[")  # one being written for the first time
    assert read_exemplars(tmp_path) == {("h_bucket", (("le", "1.0"),)): Exemplar({"trace_id": "2"}, 0.6, 11.0)}
