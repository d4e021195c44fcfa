"""``--metrics-port`` with several front ends: every front end serves the merged /metrics on it."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx

from ..observe import children, metric, row_body, synthetic_repository, until, wait_until
from ..payloads import INFER
from ..servers import free_port


def listeners(port: int) -> int:
    """Sockets listening on ``port`` (IPv4, Linux)."""
    table = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in table if (f := line.split())[1].endswith(f":{port:04X}") and f[3] == "0A")


async def test_metrics_port_serves_every_process_totals_with_two_front_ends(start_server, tmp_path):
    port = free_port()
    server = start_server(synthetic_repository(tmp_path / "repo"), frontends=2, poll_interval=0, metrics_port=port)
    scrape = f"http://127.0.0.1:{port}"
    assert listeners(port) == 2  # each front end, not one process the others depend on
    async with httpx.AsyncClient(base_url=server.url, timeout=60,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:
        answers = await asyncio.gather(*(http.post(INFER, json=row_body(i)) for i in range(8)))
    assert [r.status_code for r in answers] == [200] * 8
    for _ in range(6):  # a new connection each: the kernel spreads them over both front ends
        assert metric(scrape, "batchserve_requests_total", model="syn", code="200") == 8
    assert metric(server.url, "batchserve_requests_total", model="syn", code="200") == 8
    assert metric(scrape, "batchserve_batch_size_sum", model="syn") == 8  # the engine's series, merged in
    assert metric(scrape, "batchserve_model_ready", model="syn") == 1

    openmetrics = httpx.get(f"{scrape}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    assert httpx.post(f"{scrape}/metrics").status_code == 405

    victim = children(server.process.pid, "frontend")[0]
    os.kill(victim, signal.SIGKILL)  # the other front end still answers; the new one joins the port
    wait_until(lambda: metric(scrape, "batchserve_requests_total", model="syn", code="200") == 8,
               "the metrics port answered by the surviving front end")
    await until(lambda: victim not in children(server.process.pid, "frontend") and listeners(port) == 2,
                "the replacement front end serving the metrics port", timeout=60)
    assert metric(scrape, "batchserve_requests_total", model="syn", code="200") == 8
