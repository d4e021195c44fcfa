"""Traces across processes: ``--frontends 2 --workers process`` configured by the OTEL_* environment, exporting
to an OTLP/HTTP receiver the test runs. Each sampled request's spans come from three processes (its front end, the
engine, the model's worker) and each has the right parent; the latency histograms' exemplars are its trace id."""

from __future__ import annotations

import time

import grpc
import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from ..live_prometheus import live_prometheus, needs_prometheus
from ..observe import INFER, row_body, synthetic_repository, wait_until
from ..otlp import OtlpReceiver, Span
from ..payloads import grpc_infer_request

STAGES = ("batch", "compute", "decode", "encode", "infer", "queue")


def test_every_span_has_its_parent_across_front_ends_engine_and_workers(start_server, tmp_path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    from tritonclient.grpc import service_pb2_grpc

    receiver = OtlpReceiver()
    try:
        for name, value in receiver.env().items():
            monkeypatch.setenv(name, value)
        server = start_server(synthetic_repository(tmp_path / "repo"), frontends=2, workers="process",
                              poll_interval=0)
        callers = {f"{0xC0FFEE00 + n:032x}": f"{0xBEEF00 + n:016x}" for n in range(4)}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for trace_id, span_id in list(callers.items())[:3]:
                answer = http.post(INFER, json=row_body(1.0), headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
                assert answer.status_code == 200
        trace_id, span_id = list(callers.items())[3]
        with grpc.insecure_channel(server.grpc_target) as channel:
            service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                grpc_infer_request(1.0), metadata=(("traceparent", f"00-{trace_id}-{span_id}-01"),), timeout=30)
        traces = {t: receiver.wait_for(lambda t=t: (s := receiver.named(t)) and tuple(sorted(s)) == STAGES and s,
                                       f"trace {t}'s spans from every process") for t in callers}
        exemplars = receiver.wait_for(lambda: all((found := _exemplars(server.url)).values()) and found,
                                      "the trace ids as exemplars of both latency histograms")
    finally:
        receiver.close()
    for trace_id, spans in traces.items():
        one: dict[str, Span] = {name: found[0] for name, found in spans.items()}
        assert all(len(found) == 1 for found in spans.values()), spans
        infer, batch, compute = one["infer"], one["batch"], one["compute"]
        roles = {name: span.resource["batchserve.role"] for name, span in one.items()}
        assert roles["infer"] in ("frontend-0", "frontend-1")
        assert roles == {"infer": roles["infer"], "decode": roles["infer"], "encode": roles["infer"],
                         "queue": "engine", "batch": "engine", "compute": "worker"}
        assert len({one["infer"].resource["process.pid"], batch.resource["process.pid"],
                    compute.resource["process.pid"]}) == 3
        assert infer.parent == callers[trace_id]
        assert [one[n].parent for n in ("decode", "queue", "encode", "batch")] == [infer.span_id] * 4
        assert batch.links == [(trace_id, infer.span_id)] and compute.parent == batch.span_id
        assert infer.attributes["batchserve.batch_size"] == 1  # the engine's answer told the front end
        assert infer.attributes["batchserve.status"] == 200
    # each bucket keeps its newest exemplar: the trace ids of some of the four requests (the front ends' through
    # their exemplar files, the engine's in its samples)
    assert set().union(*exemplars.values()) <= set(callers)


def _exemplars(url: str) -> dict[str, set[str]]:
    """The trace ids that are exemplars of the request-duration and queue-wait histograms (OpenMetrics)."""
    text = httpx.get(f"{url}/metrics", headers={"Accept": "application/openmetrics-text"}).text
    found: dict[str, set[str]] = {"batchserve_request_duration_seconds": set(), "batchserve_queue_duration_seconds": set()}
    for family in text_string_to_metric_families(text):
        if family.name in found:
            found[family.name] |= {s.exemplar.labels["trace_id"] for s in family.samples if s.exemplar is not None}
    return found


@needs_prometheus
def test_prometheus_keeps_the_exemplars_that_open_a_requests_trace(start_server, tmp_path,
                                                                   monkeypatch: pytest.MonkeyPatch):
    receiver = OtlpReceiver()
    for name, value in receiver.env().items():
        monkeypatch.setenv(name, value)
    trace_id = f"{0xE0E0:032x}"
    try:
        server = start_server(synthetic_repository(tmp_path / "repo"), poll_interval=0)
        target = server.url.removeprefix("http://")
        config = ("global: {scrape_interval: 1s}\n"
                  f"scrape_configs:\n  - job_name: batchserve\n    static_configs: [{{targets: ['{target}']}}]\n")
        with live_prometheus(tmp_path, config, "--enable-feature=exemplar-storage") as url:
            answer = httpx.post(f"{server.url}{INFER}", json=row_body(1.0),
                                headers={"traceparent": f"00-{trace_id}-{0xE1:016x}-01"})
            assert answer.status_code == 200
            start = time.time() - 60

            def exemplar_trace_ids() -> set[str]:
                found = httpx.get(f"{url}/api/v1/query_exemplars", timeout=5, params={
                    "query": "batchserve_request_duration_seconds_bucket", "start": start, "end": time.time() + 60})
                found.raise_for_status()
                return {e["labels"]["trace_id"] for series in found.json()["data"] or [] for e in series["exemplars"]}

            assert wait_until(exemplar_trace_ids, "Prometheus to scrape the exemplar", timeout=60) == {trace_id}
    finally:
        receiver.close()
