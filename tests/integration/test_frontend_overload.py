"""A front end that runs far behind refuses scheduling: slo requests before reading their bodies.

The front end is stalled for real (SIGSTOP, then SIGCONT 0.3 s later: its event loop comes back
that far behind, as after a burst it could not keep up with); requests written on open
keep-alive connections while it was stopped are read on its return. The synthetic model
``syn`` is scheduled by SLO (1 s), its twin ``twin`` by the fixed rule: only ``syn``'s requests
are refused, 503 with Retry-After, counted under reason ``overloaded``; ``twin``'s are answered.
Each connection stays usable: the refused body was read and dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..observe import children, metric, row_body, synthetic_repository, wait_until


def _request(model: str, value: float) -> bytes:
    body = json.dumps(row_body(value)).encode()
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    assert len(rest) == length, "nothing may follow the answer"
    return int(lines[0].split()[1]), headers, rest


def _state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


@pytest.mark.parametrize("frontends", [1, 2], ids=["1-frontend", "2-frontends"])
def test_a_front_end_far_behind_refuses_slo_requests_and_answers_the_others(start_server, tmp_path, frontends):
    repo = synthetic_repository(tmp_path / "repo", scheduling="slo", slo_ms=1000)
    shutil.copytree(repo / "syn", repo / "twin")
    config = yaml.safe_load((repo / "twin" / "model.yaml").read_text())
    (repo / "twin" / "model.yaml").write_text(yaml.safe_dump({**config, "scheduling": "fixed"}))
    # refused beyond 0.1 of 980 ms (1 s less the 2 % reserve): 98 ms; the stall is 300 ms
    server = start_server(repo, poll_interval=0, frontends=frontends, overload_share=0.1)
    stalled = [server.process.pid] if frontends == 1 else children(server.process.pid, "frontend")
    models = ["syn", "twin"] * 4
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in models]
    try:
        for sock, model in zip(connections, models):  # accepted and answered before the stall
            sock.sendall(_request(model, 1.0))
            assert _response(sock)[0] == 200
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        try:
            for pid in stalled:  # the signal is delivered asynchronously: stopped before anything is sent
                wait_until(lambda pid=pid: _state(pid) == "T", f"process {pid} stopped", timeout=10)
            for i, (sock, model) in enumerate(zip(connections, models)):
                sock.sendall(_request(model, 10.0 + i))
            time.sleep(0.3)  # the stall itself: how far behind the loops come back
        finally:
            for pid in stalled:
                os.kill(pid, signal.SIGCONT)
        answers = [_response(sock) for sock in connections]
        for (status, headers, body), model, i in zip(answers, models, range(len(models))):
            if model == "syn":
                assert status == 503, body
                assert headers["retry-after"] == "1"
                assert "overloaded" in json.loads(body)["error"]
            else:
                assert status == 200, body
                assert json.loads(body)["outputs"][0]["data"] == [10.0 + i]
        # the refused bodies were read and dropped: each connection serves its next request once caught up
        for sock, model in zip(connections, models):
            for _ in range(100):
                sock.sendall(_request(model, 2.0))
                status, _, body = _response(sock)
                if status == 200:
                    break
            assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.0]
    finally:
        for sock in connections:
            sock.close()
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="overloaded") >= 4
    assert metric(server.url, "batchserve_rejected_total", model="twin", reason="overloaded") == 0
    assert metric(server.url, "batchserve_slo_requests_total", model="syn", outcome="rejected") == metric(
        server.url, "batchserve_rejected_total", model="syn", reason="overloaded")
    # the tick after the stall recorded it (one scrape: the timer keeps ticking between two)
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "batchserve_event_loop_lag_seconds_bucket":
                buckets[sample.labels["le"]] = buckets.get(sample.labels["le"], 0.0) + sample.value
    assert buckets["+Inf"] - buckets["0.25"] >= len(stalled)
