"""A short run of the benchmark's floor: one front end and the bare handler, each on two bodies, answer every
request, and the table and targets report both."""

from __future__ import annotations

import pytest

from load_tests.harness.floor import floor_summaries, floor_table, floor_targets, measure_floor


@pytest.mark.slow
def test_the_floor_measures_both_servers_on_each_body(tmp_path):
    points = measure_floor(tmp_path, pinned=False, warmup=0.2, duration=0.8, repeats=1,
                           bodies=("image_classifier", "tabular"), echo=False)
    assert [(p.server, p.body) for p in points] == [
        ("batchserve", "image_classifier"), ("batchserve", "tabular"), ("bare", "image_classifier"), ("bare", "tabular")]
    for point in points:
        assert point.rps > 0 and point.errors == 0, point
        assert point.server_cpu_us > 0 and point.p50_ms <= point.p99_ms, point
    assert [p.body_bytes for p in points] == [110_741, 272] * 2
    summaries = floor_summaries(points)
    assert [s["body"] for s in summaries] == ["image_classifier", "tabular"]
    assert all(s["ratio"] > 0 and s["cpu_ratio"] > 0 for s in summaries)
    assert len(floor_table(points)) == 3
    assert [line.split()[1] for line in floor_targets(points)] == ["image_classifier", "tabular"]
