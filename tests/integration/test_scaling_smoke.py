"""A short run of the front-end scaling benchmark: N=1, both bodies, one repeat of about a second."""

from __future__ import annotations

import pytest

from load_tests.research.scaling import DEFAULT_BODIES, Plan, measure, table


@pytest.mark.slow
def test_scaling_benchmark_measures_one_front_end(tmp_path):
    plan = Plan(frontends=[1], connections=16, duration=1.0, warmup=0.3, repeats=1)
    points = measure(plan, tmp_path)
    assert [(p.frontends, p.body, p.mode) for p in points] == [(1, body, "closed") for body in DEFAULT_BODIES]
    for point in points:
        assert point.rps > 0 and point.requests > 0, point
        assert point.errors == 0, point
        assert point.mean_batch >= 1, point
        assert point.server_cpu_us > 0 and point.generator_cpu_us > 0, point
        assert point.p50_ms <= point.p99_ms, point
    assert points[0].body_bytes > 110_000 and points[1].body_bytes < 400
    assert len(table(points)) == 1 + len(points)
