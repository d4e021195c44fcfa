"""The SRE kit against a real Prometheus: promtool on the rules, and live scraping of a running server."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import httpx

from ..live_prometheus import live_prometheus, needs_prometheus, query
from ..observe import wait_until
from ..servers import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"


@needs_prometheus
def test_promtool_checks_and_unit_tests_the_rules():
    check = subprocess.run(["promtool", "check", "rules", "rules.yml"], cwd=PROMETHEUS, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    config = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=PROMETHEUS, capture_output=True,
                            text=True)
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_has_a_promtool_test():
    rules = (PROMETHEUS / "rules.yml").read_text()
    tests = (PROMETHEUS / "rules_test.yml").read_text()
    alerts = re.findall(r"- alert: (\w+)", rules)
    assert len(alerts) >= 6
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool test"


def _series_names() -> set[str]:
    from types import SimpleNamespace

    from server.observability.engine_restarts import HoldMetrics, count_restarts
    from server.observability.gpu import GpuSeries
    from server.observability.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    registry = Metrics().registry
    count_restarts(registry, 0)  # the engine's (--frontends N)
    HoldMetrics().register(registry)  # a front end's
    gpu = GpuSeries(SimpleNamespace(nvmlDeviceGetCount=lambda: 0))  # the families, without a device
    return {f.name + suffix for f in [*registry.collect(), *gpu.collect()] for suffix in suffixes[f.type]}


SERIES = r"\b((?:model:)?batchserve_[a-z_:0-9]+|process_[a-z_]+|nv_gpu_[a-z_]+)"


def test_dashboard_and_rules_query_only_series_that_exist():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    recorded = set(re.findall(r"record: (\S+)", (PROMETHEUS / "rules.yml").read_text()))
    exposed = _series_names()
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "nv_gpu_memory_used_bytes"} <= exposed
    for expr in exprs:
        for name in re.findall(SERIES, expr):
            assert name in recorded or name in exposed, f"dashboard uses unknown series {name}"
    rules = (PROMETHEUS / "rules.yml").read_text()
    for name in set(re.findall(SERIES, rules)):
        assert name in recorded or name in exposed, f"rules.yml uses unknown series {name}"


@needs_prometheus
async def test_live_prometheus_scrapes_and_recording_rules_match_known_traffic(demo_server, tmp_path: Path):
    # The same rules with 15 s windows instead of 1-5 min, so a short test sees full windows.
    rules = (PROMETHEUS / "rules.yml").read_text()
    (tmp_path / "rules.yml").write_text(re.sub(r"\[(1|5|10)m\]", "[15s]", rules))
    target = demo_server.url.removeprefix("http://")
    config = ("global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
              "rule_files: [rules.yml]\n"
              f"scrape_configs:\n  - job_name: batchserve\n    static_configs: [{{targets: ['{target}']}}]\n")
    with live_prometheus(tmp_path, config) as url:
        await asyncio.to_thread(wait_until, lambda: query(url, 'up{job="batchserve"} == 1'),
                                "Prometheus to scrape the server")

        rate, seconds = 20.0, 22.0  # known traffic: 20 requests/s to `scale`, one row each
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]}
        async with httpx.AsyncClient(base_url=demo_server.url) as http:
            start = time.monotonic()
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                assert (await http.post("/v2/models/scale/infer", json=body)).status_code == 200
        # a scrape after the last request, then a rule evaluation after that scrape
        ended = time.time()
        scraped = await asyncio.to_thread(wait_until, lambda: _newer_sample(url, 'up{job="batchserve"}', ended),
                                          "a scrape after the traffic")
        await asyncio.to_thread(wait_until, lambda: _newer_sample(
            url, 'model:batchserve_requests:rate1m{model="scale",version="1"}', scraped), "the rules evaluated on it")

        (requests,) = query(url, 'model:batchserve_requests:rate1m{model="scale",version="1"}')
        assert 0.75 * rate < float(requests["value"][1]) < 1.25 * rate
        (rows,) = query(url, 'model:batchserve_inferences:rate1m{model="scale",version="1"}')
        assert 0.75 * rate < float(rows["value"][1]) < 1.25 * rate
        (p99,) = query(url, 'model:batchserve_request_duration_seconds:p99{model="scale",version="1"}')
        assert 0 < float(p99["value"][1]) < 0.5
        (good,) = query(url, 'model:batchserve_slo_good:ratio5m{model="scale",version="1"}')
        assert float(good["value"][1]) > 0.9
        (batch,) = query(url, 'model:batchserve_batch_size:mean1m{model="scale",version="1"}')
        assert float(batch["value"][1]) >= 1
        assert query(url, 'ALERTS{alertname="BatchserveModelNotReady"}') == []


def _newer_sample(url: str, promql: str, after: float) -> float | None:
    """The timestamp of the series' newest sample when it is later than ``after``."""
    found = query(url, f"timestamp({promql})")
    newest = float(found[0]["value"][1]) if found else 0.0
    return newest if newest > after else None
