"""A short run of the benchmark's floor: one front end and the bare handler, each on two bodies (the target
body at capacity too), answer every request, and the table and targets report both."""

from __future__ import annotations

import pytest

from load_tests.harness.floor import floor_summaries, floor_table, floor_targets, measure_floor


@pytest.mark.slow
def test_the_floor_measures_both_servers_on_each_body(tmp_path):
    points = measure_floor(tmp_path, pinned=False, warmup=0.2, duration=0.8, repeats=1,
                           bodies=("image_uint8", "tabular"), echo=False)
    runs = [("image_uint8", 64), ("tabular", 64), ("tabular", 256)]  # the target body at capacity too
    assert [(p.server, p.body, p.connections) for p in points] == [
        *(("batchserve", body, n) for body, n in runs), *(("bare", body, n) for body, n in runs)]
    for point in points:
        assert point.rps > 0 and point.errors == 0, point
        assert point.server_cpu_us > 0 and point.p50_ms <= point.p99_ms and point.busy > 0, point
    assert [p.body_bytes for p in points] == [27_797, 272, 272] * 2
    summaries = floor_summaries(points)
    assert [(s["body"], s["connections"]) for s in summaries] == runs
    assert all(s["ratio"] > 0 and s["cpu_ratio"] > 0 for s in summaries)
    assert len(floor_table(points)) == 4
    targets = floor_targets(points)
    assert targets[0] == "  n/a   image_classifier: not measured in this run"
    latency, capacity = summaries[1], summaries[2]
    met = latency["cpu_ratio"] <= 1.25 and capacity["cpu_ratio"] <= 1.25 and capacity["ratio"] >= 0.8
    assert targets[1] == (
        f"  {'MET ' if met else 'MISS'}  tabular (272 B V2 binary): batchserve / bare handler CPU a request "
        f"{latency['cpu_ratio']:.2f}x at 64 connections; CPU a request {capacity['cpu_ratio']:.2f}x at 256 "
        f"connections; requests/s {capacity['ratio']:.2f} at 256 (targets: CPU <= 1.25x; requests/s >= 0.8 at "
        "capacity)")
