"""OpenTelemetry traces of the in-process server, exported over OTLP/HTTP to a receiver the test runs, configured
through the environment as a user configures them: every span of a sampled request checked by its trace id and
its parent, for each entry (in-protocol HTTP, ASGI, gRPC), through the engine's front-end link, for refusals and
for the sampler; the trace ids as exemplars of the latency histograms."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from server.observability import tracing

from ..harness import Served, serving, syn_rule, synthetic_model, until
from ..otlp import OtlpReceiver, Span
from ..payloads import BAD_SHAPE, grpc_infer_request, row_body

SERVER_KIND = 2  # opentelemetry.proto's SPAN_KIND_SERVER


def caller(n: int, sampled: bool = True) -> tuple[str, str, str]:
    """The caller's trace id, span id and ``traceparent`` header of request ``n``."""
    trace_id, span_id = f"{0xABC0000 + n:032x}", f"{0xF00 + n:016x}"
    return trace_id, span_id, f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    received = OtlpReceiver()
    for name, value in received.env().items():
        monkeypatch.setenv(name, value)
    yield received
    received.close()


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return synthetic_model(tmp_path / "repo", "syn")


async def _request(served: Served, via: str, traceparent: str | None, body: Any = None, model: str = "syn") -> int:
    headers = {"traceparent": traceparent} if traceparent else {}
    if via == "grpc":
        from tritonclient.grpc import service_pb2_grpc

        assert served.grpc_target is not None
        async with grpc.aio.insecure_channel(served.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            await stub.ModelInfer(grpc_infer_request(2.0, model=model), metadata=tuple(headers.items()), timeout=10)
        return 200
    answer = await served.client(via).post(f"/v2/models/{model}/infer", body or row_body(2.0), headers)
    return answer.status


async def _trace(receiver: OtlpReceiver, trace_id: str, names: tuple[str, ...]) -> dict[str, list[Span]]:
    return await until(lambda: (spans := receiver.named(trace_id)) and all(n in spans for n in names) and spans,
                       f"the spans {names} of trace {trace_id}")  # type: ignore[no-any-return]


def assert_one_trace(spans: dict[str, list[Span]], trace_id: str, parent: str, protocol: str) -> Span:
    """A whole trace: the request under the caller's span, its stages under it, the batch (linked to it) and
    the model's run under the batch; each once. Returns the request's span."""
    assert sorted(spans) == ["batch", "compute", "decode", "encode", "infer", "queue"], spans
    assert all(len(found) == 1 for found in spans.values()), spans
    one = {name: found[0] for name, found in spans.items()}
    infer, batch = one["infer"], one["batch"]
    assert all(span.trace_id == trace_id for span in one.values())
    assert (infer.parent, infer.kind) == (parent, SERVER_KIND)
    assert infer.attributes == {"batchserve.protocol": protocol, "batchserve.model": "syn", "batchserve.version": "1",
                                "batchserve.signature": "serving_default", "batchserve.status": 200,
                                "batchserve.batch_size": 1}
    assert [one[name].parent for name in ("decode", "queue", "encode", "batch")] == [infer.span_id] * 4
    assert batch.links == [(trace_id, infer.span_id)]
    assert batch.attributes == {"batchserve.model": "syn", "batchserve.version": "1", "batchserve.signature": "",
                                "batchserve.batch_size": 1}
    assert one["queue"].attributes == {}
    assert (one["compute"].parent, one["compute"].attributes) == (batch.span_id, {"batchserve.batch_size": 1})
    assert infer.start <= one["decode"].start <= one["decode"].end <= one["encode"].start <= infer.end
    assert batch.start <= one["compute"].start <= one["compute"].end <= batch.end
    return infer


@pytest.mark.parametrize("via", ["socket", "asgi", "grpc"])
async def test_a_sampled_request_is_one_trace_from_its_callers_span_to_the_models_run(
        receiver: OtlpReceiver, repository: Path, via: str) -> None:
    trace_id, span_id, traceparent = caller(1)
    async with serving(repository, grpc=via == "grpc") as served:
        assert await _request(served, via, traceparent) == 200
        spans = await _trace(receiver, trace_id, ("infer", "decode", "queue", "encode", "batch", "compute"))
    infer = assert_one_trace(spans, trace_id, span_id, "grpc" if via == "grpc" else "v2")
    assert infer.resource["service.name"] == "batchserve-test" and infer.resource["batchserve.role"] == "server"


async def test_a_request_without_a_traceparent_starts_its_own_trace(receiver: OtlpReceiver, repository: Path) -> None:
    async with serving(repository) as served:
        assert await _request(served, "socket", None) == 200
        await until(lambda: any(s.name == "compute" for s in receiver.spans), "a trace")
    [root] = [s for s in receiver.spans if s.name == "infer"]
    assert root.parent == "" and root.trace_id != "0" * 32
    assert_one_trace(receiver.named(root.trace_id), root.trace_id, "", "v2")


async def test_through_the_engine_the_trace_crosses_the_front_end_link(receiver: OtlpReceiver,
                                                                       repository: Path) -> None:
    trace_id, span_id, traceparent = caller(2)
    async with serving(repository, frontends=True) as served:
        assert await _request(served, "socket", traceparent) == 200
        spans = await _trace(receiver, trace_id, ("infer", "decode", "queue", "encode", "batch", "compute"))
    assert_one_trace(spans, trace_id, span_id, "v2")  # the batch size came back with the engine's answer


async def test_a_refused_or_failed_request_says_why(receiver: OtlpReceiver, repository: Path) -> None:
    async with serving(repository, max_inflight_bytes=1024) as served:
        refused, missing, bad = caller(3), caller(4), caller(5)
        puppet = await served.puppet("syn")
        held = asyncio.ensure_future(_request(served, "socket", None))  # its body is held in flight
        [first] = await puppet.submitted()
        assert await _request(served, "socket", refused[2], row_body(1.0, rows=100)) == 503  # past the bytes in flight
        first.resolve(syn_rule(first.inputs))
        assert await held == 200
        assert await _request(served, "asgi", missing[2], model="nope") == 404
        assert await _request(served, "socket", bad[2], BAD_SHAPE) == 400
        inflight = (await _trace(receiver, refused[0], ("infer",)))["infer"]
        unknown = (await _trace(receiver, missing[0], ("infer",)))["infer"]
        invalid = await _trace(receiver, bad[0], ("infer", "decode"))
    assert [(s.parent, s.attributes["batchserve.status"], s.attributes["batchserve.reason"], s.status, s.message)
            for s in inflight] == [(refused[1], 503, "inflight_full", 2, "this front end holds 0 MiB of request "
                                    "bodies (max_inflight_bytes=1024); retry shortly")]
    assert [(s.attributes["batchserve.status"], s.attributes["batchserve.reason"], s.status,
             s.attributes["batchserve.error"]) for s in unknown] == [
        (404, "invalid", 0, "model 'nope' is not in the repository; models: ['syn']")]  # the client's error
    [request], [decode] = invalid["infer"], invalid["decode"]
    assert (request.attributes["batchserve.status"], request.attributes["batchserve.reason"]) == (400, "invalid")
    assert request.attributes["batchserve.error"].startswith("input 'features' expects shape [-1, 4], got [1, 3]")
    assert (decode.parent, decode.status) == (request.span_id, 0)  # decoded; the shape is checked after
    assert sorted(invalid) == ["decode", "infer"]  # never queued


async def test_the_sampler_follows_the_callers_decision_and_the_ratio(receiver: OtlpReceiver, repository: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")  # no trace of its own: only a sampled caller's is continued
    sampled, unsampled = caller(6), caller(7, sampled=False)
    async with serving(repository) as served:
        assert tracing.TRACER is not None and tracing.TRACER.sampling.ratio == 0.0
        for traceparent in (None, unsampled[2], "00-not-a-traceparent-01", sampled[2]):
            assert await _request(served, "socket", traceparent) == 200
        await _trace(receiver, sampled[0], ("compute",))
    assert tracing.TRACER is None  # off once the server stopped; every span it made was sent
    assert {span.trace_id for span in receiver.spans} == {sampled[0]}


async def test_tracing_off_sends_nothing(receiver: OtlpReceiver, repository: Path) -> None:
    async with serving(repository, tracing="off") as served:
        assert tracing.TRACER is None
        assert await _request(served, "socket", caller(8)[2]) == 200
    assert receiver.requests == 0


async def test_sampled_requests_are_the_exemplars_of_the_latency_histograms(receiver: OtlpReceiver,
                                                                            repository: Path) -> None:
    trace_id, _, traceparent = caller(9)
    async with serving(repository) as served:
        assert await _request(served, "socket", traceparent) == 200
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served.asgi_app),
                                     base_url="http://batchserve.test") as http:
            answer = await http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        plain = await served.metrics_text()  # Prometheus' text format: no exemplars, the same series
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = {family.name: [(s.labels, s.exemplar) for s in family.samples if s.exemplar is not None]
                 for family in text_string_to_metric_families(answer.text)}
    for name, labels in (("batchserve_request_duration_seconds", {"protocol": "v2"}),
                         ("batchserve_queue_duration_seconds", {"signature": ""})):
        [(bucket, exemplar)] = exemplars[name]
        assert bucket["model"] == "syn" and all(bucket[k] == v for k, v in labels.items() if k in bucket)
        assert exemplar.labels == {"trace_id": trace_id} and 0 <= exemplar.value <= float(bucket["le"])
    assert "trace_id" not in plain and "batchserve_request_duration_seconds_bucket" in plain


async def test_a_sampled_requests_log_line_names_its_trace(receiver: OtlpReceiver, repository: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="batchserve.access")
    trace_id, _, traceparent = caller(10)
    async with serving(repository, access_log_sample=1.0) as served:
        assert await _request(served, "socket", traceparent) == 200
        assert await _request(served, "socket", caller(11, sampled=False)[2]) == 200
        [infer] = (await _trace(receiver, trace_id, ("infer",)))["infer"]
    traced, untraced = [r.fields for r in caplog.records if r.name == "batchserve.access"]
    assert (traced["trace_id"], traced["span_id"]) == (trace_id, infer.span_id)
    assert "trace_id" not in untraced and "span_id" not in untraced
