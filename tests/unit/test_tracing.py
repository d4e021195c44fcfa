"""Tracing's rules without a server: when it is on, the sampler decided before the SDK (the SDK's own decision,
the same trace ids), the W3C header, the OTEL_* values refused, and the batcher's hook on a batch's own task."""

from __future__ import annotations

import asyncio
import random
import sys
from contextvars import ContextVar

import numpy as np
import pytest

from batching import BatchConfig, Batcher, FakeClock
from server.observability import tracing
from server.observability.trace_context import parse_traceparent, traceparent
from server.observability.tracing import Sampling, SdkMissing, Tracing, TracingUnavailable, wanted
from server.settings import Settings

from .batching_helpers import RecordingObserver, rows, settle

sampling = pytest.importorskip("opentelemetry.sdk.trace.sampling",
                               reason="tracing needs the otel extra (pip install 'batchserve[otel]', in the dev extra)")
api = pytest.importorskip("opentelemetry.trace")


@pytest.mark.parametrize(("mode", "env", "on"), [
    ("auto", {}, False),  # off by default
    ("auto", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ("auto", {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ("auto", {"OTEL_TRACES_EXPORTER": "console"}, True),
    ("auto", {"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),  # no exporter named
    ("on", {}, True),
    ("off", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ("on", {"OTEL_SDK_DISABLED": "true"}, False),
    ("on", {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
])
def test_when_tracing_is_on(mode: str, env: dict[str, str], on: bool) -> None:
    assert wanted(mode, env) is on


@pytest.mark.parametrize(("value", "parsed"), [
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", (0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                                0x00f067aa0ba902b7, True)),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", (0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                                0x00f067aa0ba902b7, False)),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-more", (0x4bf92f3577b34da6a3ce929d0e0e4736,
                                                                      0x00f067aa0ba902b7, True)),  # a later version
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", None),  # version 00 has four fields
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),  # all-zero trace id
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
    ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", None),  # upper case
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", None),
    ("00-4bf92f3577b34da6a3ce929d0e0e47_6-00f067aa0ba902b7-01", None),
    ("", None),
])
def test_traceparent_header(value: str, parsed: tuple[int, int, bool] | None) -> None:
    assert parse_traceparent(value) == parsed


def test_traceparent_written_is_read_back() -> None:
    assert parse_traceparent(traceparent(0xABC, 0x12)) == (0xABC, 0x12, True)


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.25, 1.0])
def test_the_sampling_decision_is_the_sdks_for_the_same_trace_id(ratio: float) -> None:
    ours, sdk = Sampling("traceidratio", str(ratio)), sampling.TraceIdRatioBased(ratio)
    ids = [random.getrandbits(128) for _ in range(2000)]
    assert [ours.child(i, False) for i in ids] == [sdk.should_sample(None, i, "infer").decision.is_sampled()
                                                   for i in ids]
    roots = [ours.root() for _ in range(2000)]
    assert all(sdk.should_sample(None, r, "infer").decision.is_sampled() for r in roots if r)
    if ratio in (0.0, 1.0):
        assert all(bool(r) is (ratio == 1.0) for r in roots)
    else:
        assert 0 < sum(1 for r in roots if r) < 2000 * ratio * 2


def test_parent_based_sampling_follows_the_callers_flag() -> None:
    ours, sdk = Sampling("parentbased_traceidratio", "0"), sampling.ParentBased(sampling.TraceIdRatioBased(0.0))
    assert ours.root() == 0 and ours.child(1, True) and not ours.child(1, False)
    for flags in (api.TraceFlags.DEFAULT, api.TraceFlags.SAMPLED):
        caller = api.set_span_in_context(api.NonRecordingSpan(api.SpanContext(1, 2, True, api.TraceFlags(flags))))
        assert sdk.should_sample(caller, 1, "infer").decision.is_sampled() is ours.child(1, flags == 1)
    assert Sampling("always_off", None).child(1, True) is False and Sampling("always_on", None).root() != 0


@pytest.mark.parametrize(("env", "message"), [
    ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER='jaeger_remote' is not a sampler batchserve "
                                               "takes; one of always_on,"),
    ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1%"},
     "OTEL_TRACES_SAMPLER_ARG='1%': a sampling ratio from 0 to 1 (0.01: 1 %)"),
    ({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
     "OTEL_TRACES_SAMPLER_ARG='2': a sampling ratio"),
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER='zipkin': batchserve exports otlp or console"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
     "OTEL_EXPORTER_OTLP_PROTOCOL='http/json': batchserve exports http/protobuf or grpc"),
])
def test_values_tracing_cannot_take_are_refused_naming_them(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                            message: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TracingUnavailable) as raised:
        Tracing("server")
    assert str(raised.value).startswith(message)


def test_without_the_sdk_on_is_an_error_and_auto_serves_untraced(monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)  # its import fails: not installed
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SdkMissing, match=r"pip install 'batchserve\[otel\]'"), tracing.tracing(
            Settings(tracing="on"), "server"):
        pass
    with tracing.tracing(Settings(tracing="auto"), "server") as active:
        assert active is None and tracing.TRACER is None
    assert "serving without tracing" in caplog.text


def test_one_process_shares_its_tracing_until_the_last_user_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    settings = Settings()
    with tracing.tracing(settings, "frontend-0") as first:
        with tracing.tracing(settings, "engine") as second:  # the in-process harness: engine and front end
            assert second is first is tracing.TRACER
        assert tracing.TRACER is first
    assert tracing.TRACER is None


# ---- the batcher's hook --------------------------------------------------------------------------------

_SEEN: ContextVar[int | None] = ContextVar("seen", default=None)


class TracingObserver(RecordingObserver):
    def __init__(self) -> None:
        super().__init__()
        self.traced: list[tuple[list[tuple[object, float | None]], int]] = []
        self.ran: list[bool] = []

    def batch_traced(self, members: list[tuple[object, float | None]], rows: int):  # type: ignore[no-untyped-def]
        self.traced.append((members, rows))
        _SEEN.set(len(self.traced))  # on the batch's own task: its run_batch sees it, no other task does
        return self.ran.append


async def test_a_batch_of_traced_requests_tells_the_observer_on_its_own_task() -> None:
    seen: list[int | None] = []

    async def model(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(_SEEN.get())
        return {"y": inputs["x"] * 2}

    clock, observer = FakeClock(), TracingObserver()
    batcher = Batcher(model, BatchConfig(max_batch_size=2, max_queue_delay=0.010), clock=clock, observer=observer)
    untraced = asyncio.ensure_future(batcher.submit(rows(1.0)))
    await settle()
    clock.advance(0.002)
    traced = asyncio.ensure_future(batcher.submit(rows(2.0, 3.0, 4.0), trace="ctx"))  # two batches: 1 row, then 2
    await settle()
    assert untraced.done() and traced.done()
    np.testing.assert_array_equal(traced.result()["y"], [[4.0], [6.0], [8.0]])
    assert observer.traced == [([("ctx", 0.0)], 2), ([("ctx", None)], 2)]  # its wait once: its first rows'
    assert observer.ran == [True, True] and seen == [1, 2]
    alone = asyncio.ensure_future(batcher.submit(rows(5.0)))  # a batch of untraced requests: no hook
    await settle()
    clock.advance(0.010)
    await settle()
    assert alone.done() and len(observer.traced) == 2 and seen == [1, 2, None]
