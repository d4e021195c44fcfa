"""process_* series: read from /proc for every process a server names, labelled role and index, and passed
through the front ends' merge unchanged (no two processes share labels)."""

from __future__ import annotations

import os
import threading
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.observability.merge import merge
from server.observability.metrics import Metrics
from server.observability.process_series import SERIES, ProcessSeries, parent, read_process, worker_processes

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads Linux's /proc")


def _samples(collector: ProcessSeries) -> dict[tuple[str, str, str], float]:
    return {(s.name, s.labels["role"], s.labels["index"]): s.value for f in collector.collect() for s in f.samples}


def test_this_process_read_from_proc() -> None:
    values = read_process(os.getpid())
    assert set(values) == {name for name in SERIES}
    assert values["process_resident_memory_bytes"] > 10 * 2**20
    assert values["process_virtual_memory_bytes"] >= values["process_resident_memory_bytes"]
    assert 0 < values["process_open_fds"] <= values["process_max_fds"]
    assert time.time() - 86400 * 365 < values["process_start_time_seconds"] <= time.time()
    assert values["process_cpu_seconds_total"] > 0
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert read_process(os.getpid())["process_threads"] == values["process_threads"] + 1
    finally:
        stop.set()
        thread.join()


def test_a_process_that_is_gone_has_no_series() -> None:
    assert read_process(2**22 + 1) == {}  # above Linux's pid_max


def test_every_process_named_is_labelled_by_role_and_index() -> None:
    collector = ProcessSeries()
    collector.add(lambda: [("frontend", "0", os.getpid()), ("frontend", "1", 2**22 + 1)])  # the second is gone
    collector.add(parent("supervisor"))
    samples = _samples(collector)
    roles = {(role, index) for _, role, index in samples}
    assert roles == {("server", "0"), ("frontend", "0"), ("supervisor", "0")}
    assert samples["process_open_fds", "frontend", "0"] > 0
    assert samples["process_start_time_seconds", "supervisor", "0"] <= samples[
        "process_start_time_seconds", "server", "0"]


def test_worker_processes_are_named_by_model_version_and_device() -> None:
    pool = SimpleNamespace(processes=[("batchserve-worker-cpu:0", os.getpid()),
                                      ("batchserve-worker-cpu:0-1", os.getpid())])
    catalog = SimpleNamespace(names=lambda: ["syn", "other"], versions=lambda name: {
        "syn": [SimpleNamespace(version=2, pool=pool)], "other": [SimpleNamespace(version=1, pool=object())]}[name])
    assert list(worker_processes(catalog)()) == [  # type: ignore[arg-type]
        ("worker", "syn/2/cpu:0", os.getpid()), ("worker", "syn/2/cpu:0-1", os.getpid())]


def test_the_merge_passes_each_processs_series_through() -> None:
    """The engine reports every process; a front end's own files carry no process series: nothing is summed."""
    engine = Metrics(CollectorRegistry(auto_describe=True))
    engine.processes.add(lambda: [("frontend", "0", os.getpid()), ("frontend", "1", os.getpid())])
    merged = {f.name: f for f in merge(list(engine.registry.collect()))}
    rss = {s.labels["index"]: s.value for s in merged["process_resident_memory_bytes"].samples}
    assert set(rss) == {"0", "1"} and rss["0"] > 0  # frontend 0, frontend 1; the engine's own as server 0
    assert len(merged["process_resident_memory_bytes"].samples) == 3
    exposed = SimpleNamespace(collect=lambda: merge(list(engine.registry.collect())))  # as a front end exposes it
    text = generate_latest(exposed).decode()  # type: ignore[arg-type]
    cpu = [f for f in text_string_to_metric_families(text) if f.name == "process_cpu_seconds"]
    assert cpu[0].type == "counter" and len(cpu[0].samples) == 3

