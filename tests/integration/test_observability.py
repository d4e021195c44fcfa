"""What an SRE reads from a real server of several processes: JSON logs (every line of every process one
object, request lines with their fields, x-request-id returned), and the process series of every process
in the one /metrics."""

from __future__ import annotations

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..observe import row_body, synthetic_repository
from ..payloads import BAD_SHAPE, INFER

pytestmark = pytest.mark.slow


def test_json_logs_and_process_series_of_every_process(start_server, tmp_path):
    server = start_server(synthetic_repository(tmp_path / "repo"), poll_interval=0, frontends=2, workers="process",
                          log_format="json", access_log_sample=1, error_log_interval_s=3600)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        given = http.post(INFER, json=row_body(1.0), headers={"x-request-id": "sre-1"})
        made = http.post(INFER, json=row_body(2.0))
        bad = [http.post(INFER, json=BAD_SHAPE, headers={"x-request-id": f"bad-{i}"}) for i in range(2)]
        scraped = http.get("/metrics").text
    assert (given.status_code, given.headers["x-request-id"]) == (200, "sre-1")
    assert made.status_code == 200 and len(made.headers["x-request-id"]) == 32
    assert [b.status_code for b in bad] == [400, 400] and bad[0].headers["x-request-id"] == "bad-0"

    # one series per process, each once: the front ends', the engine's, the supervisor's, the worker's
    rss = {(s.labels["role"], s.labels["index"]): s.value for f in text_string_to_metric_families(scraped)
           if f.name == "process_resident_memory_bytes" for s in f.samples}
    assert set(rss) == {("supervisor", "0"), ("engine", "0"), ("frontend", "0"), ("frontend", "1"),
                        ("worker", "syn/1/cpu:0")}
    assert all(value > 2**20 for value in rss.values())

    assert server.stop() == 0
    lines = [orjson.loads(line) for line in server.log().splitlines()]  # every line of every process parses
    assert {(line["role"], line["index"]) for line in lines} >= {
        ("supervisor", "0"), ("engine", "0"), ("frontend", "0"), ("frontend", "1"), ("worker", "syn/1/cpu:0")}
    assert all({"time", "level", "logger", "message", "pid"} <= set(line) for line in lines)
    requests = {line["request_id"]: line for line in lines if line["logger"] == "batchserve.access"}
    assert set(requests) == {"sre-1", made.headers["x-request-id"], "bad-0"}  # bad-1: held back
    assert {k: requests["sre-1"][k] for k in ("level", "message", "role", "model", "version", "protocol", "status")} \
        == {"level": "info", "message": "request", "role": "frontend", "model": "syn", "version": "1",
            "protocol": "v2", "status": 200}
    assert requests["bad-0"]["reason"] == "invalid" and requests["bad-0"]["suppressed"] == 0
    assert any(line["logger"] == "uvicorn.error" and line["role"] == "frontend" for line in lines)
