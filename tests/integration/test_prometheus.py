"""The SRE kit against a real Prometheus: promtool on the rules, and live scraping of a running server."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ..servers import ROOT, free_port

PROMETHEUS = ROOT / "deploy" / "prometheus"
needs_prometheus = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("promtool")),
    reason="prometheus/promtool not installed (make test installs Debian's prometheus package)",
)


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


def _query(url: str, promql: str) -> list[dict]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]  # type: ignore[no-any-return]


@needs_prometheus
async def test_live_prometheus_scrapes_and_recording_rules_match_known_traffic(demo_server, tmp_path: Path):
    # The same rules with 15 s windows instead of 1-5 min, so a short test sees full windows.
    rules = (PROMETHEUS / "rules.yml").read_text()
    (tmp_path / "rules.yml").write_text(re.sub(r"\[(1|5|10)m\]", "[15s]", rules))
    port = free_port()
    target = demo_server.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [rules.yml]\n"
        f"scrape_configs:\n  - job_name: batchserve\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _query(url, 'up{job="batchserve"} == 1'):
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
        else:
            pytest.fail("Prometheus never scraped the server:\n" + (tmp_path / "prometheus.log").read_text()[-3000:])

        rate, seconds = 20.0, 22.0  # known traffic: 20 requests/s to `scale`, one row each
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1.0] * 4}]}
        async with httpx.AsyncClient(base_url=demo_server.url) as http:
            start = time.monotonic()
            for i in range(int(rate * seconds)):
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                assert (await http.post("/v2/models/scale/infer", json=body)).status_code == 200
        await asyncio.sleep(2.5)  # one more scrape and rule evaluation

        (requests,) = _query(url, 'model:batchserve_requests:rate1m{model="scale",version="1"}')
        assert 0.75 * rate < float(requests["value"][1]) < 1.25 * rate
        (rows,) = _query(url, 'model:batchserve_inferences:rate1m{model="scale",version="1"}')
        assert 0.75 * rate < float(rows["value"][1]) < 1.25 * rate
        (p99,) = _query(url, 'model:batchserve_request_duration_seconds:p99{model="scale",version="1"}')
        assert 0 < float(p99["value"][1]) < 0.5
        (good,) = _query(url, 'model:batchserve_slo_good:ratio5m{model="scale",version="1"}')
        assert float(good["value"][1]) > 0.9
        (batch,) = _query(url, 'model:batchserve_batch_size:mean1m{model="scale",version="1"}')
        assert float(batch["value"][1]) >= 1
        assert _query(url, 'ALERTS{alertname="BatchserveModelNotReady"}') == []
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        log.close()
