"""A front end whose slo model's answers come late lets through only part of that model's requests,
and all of them again once its answers are on time.

The synthetic model ``syn`` (scheduling: slo, SLO 300 ms) holds a batch at its gate while 100 more
requests queue behind it; they expire at their deadlines (504: late, for the front end), and the
front end cuts the rate it admits to ``syn`` (``batchserve_admitted_rate_limit``). A burst sent on
open keep-alive connections then has most of ``syn``'s requests refused before their bodies are
read (503, Retry-After, reason ``admitted_rate``, the message naming late answers; gRPC calls get
RESOURCE_EXHAUSTED), while ``twin``, the same model under the fixed rule, answers all of its own.
With answers on time again the limit is raised until it is dropped, and every request is answered.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import grpc
import pytest
import yaml

from ..observe import metric, synthetic_repository, wait_until
from ..payloads import grpc_infer_request, grpc_totals
from ..raw_http import read_response, request_bytes

QUEUED = 100  # late answers at once: well over the 20 a window needs


def _repository(root: Path, gate: Path) -> Path:
    repo = synthetic_repository(root, gate, scheduling="slo", slo_ms=300, max_batch_size=128)
    shutil.copytree(repo / "syn", repo / "twin")
    config = yaml.safe_load((repo / "twin" / "model.yaml").read_text())
    config["scheduling"] = "fixed"
    config["synthetic"]["gate_path"] = None
    (repo / "twin" / "model.yaml").write_text(yaml.safe_dump(config))
    return repo


def _limit(url: str) -> float:
    return metric(url, "batchserve_admitted_rate_limit", model="syn")


def _ask(sock: socket.socket, model: str, value: float) -> tuple[int, dict[str, str], bytes]:
    sock.sendall(request_bytes(model, value))
    return read_response(sock)


def test_late_answers_limit_the_rate_a_front_end_admits_then_on_time_answers_lift_it(start_server, tmp_path):
    pytest.importorskip("tritonclient.grpc.service_pb2")  # the shared request builder needs it
    service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")

    gate = tmp_path / "gate"
    # Windows of 2 s: each step below happens well within one, however slow the machine; one late
    # window is enough (the one burst of expiries below).
    server = start_server(_repository(tmp_path / "repo", gate), poll_interval=0, admission_window_ms=2000,
                          admission_late_windows=1)
    gate.touch()  # after warm-up: from now on syn's batches wait while it exists
    url = server.url
    held, *connections = [socket.create_connection(("127.0.0.1", server.port), timeout=30)
                          for _ in range(QUEUED + 1)]
    channel = grpc.insecure_channel(server.grpc_target)
    try:
        for sock in connections:  # every connection accepted and kept alive
            assert _ask(sock, "twin", 1.0)[0] == 200
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        stub.ModelInfer(grpc_infer_request(1.0, model="twin"), timeout=30)  # connected
        assert _limit(url) == 0

        # Late answers: one batch held at the gate, QUEUED requests behind it expire at their deadlines.
        held.sendall(request_bytes("syn", 1.0))
        wait_until(lambda: metric(url, "batchserve_inflight_batches", model="syn") == 1, "syn's batch held")
        for sock in connections:
            sock.sendall(request_bytes("syn", 2.0))
        wait_until(lambda: metric(url, "batchserve_queue_depth", model="syn") == QUEUED, "syn's queue full")
        wait_until(lambda: metric(url, "batchserve_slo_requests_total", model="syn", outcome="expired") == QUEUED,
                   "the queued requests expired")
        assert [read_response(sock)[0] for sock in connections] == [504] * QUEUED
        gate.unlink()
        assert read_response(held)[0] == 200

        # The window of late answers is judged at the first answer 2 s after it opened, before that
        # answer is written; until then each request is let through and answered.
        def limited() -> bool:
            if _limit(url) > 0:
                return True
            assert _ask(held, "syn", 3.0)[0] == 200
            return False

        wait_until(limited, "the admitted rate limited")
        limit = _limit(url)
        refused_before = metric(url, "batchserve_rejected_total", model="syn", reason="admitted_rate")

        # A burst: syn's requests over the limit refused before their bodies, twin's all answered.
        models = ["syn", "twin"] * (QUEUED // 2)
        for i, (sock, model) in enumerate(zip(connections, models)):
            sock.sendall(request_bytes(model, 10.0 + i))
        refused = 0
        for i, (sock, model) in enumerate(zip(connections, models)):
            status, headers, body = read_response(sock)
            if model == "syn" and status == 503:
                refused += 1
                assert headers["retry-after"] == "1"
                assert "answers came late" in json.loads(body)["error"]
            else:
                assert status == 200, body
                assert json.loads(body)["outputs"][0]["data"] == [10.0 + i]
        # The limit is 0.85 of ~110 answers in the 2 s or more of their window, ~50/s: the bucket holds
        # one request, and the burst is read within ms (40 would need 0.8 s).
        assert limit < 100 and refused >= 40, (limit, refused)
        assert metric(url, "batchserve_rejected_total", model="syn", reason="admitted_rate") - refused_before == refused
        assert metric(url, "batchserve_rejected_total", model="twin", reason="admitted_rate") == 0

        # gRPC calls are held to the same limit: five at once, one or two let through at most.
        calls = [stub.ModelInfer.future(grpc_infer_request(20.0 + i, model="syn"), timeout=30) for i in range(5)]
        exhausted = 0
        for i, call in enumerate(calls):
            try:
                answer = call.result()
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
                assert "answers came late" in error.details()
                assert ("retry-after", "1") in error.trailing_metadata()
                exhausted += 1
            else:
                assert grpc_totals(answer) == [20.0 + i]
        assert exhausted >= 3, exhausted

        # On time again: requests one after another raise the limit until it is dropped; then all are answered.
        wait_until(lambda: _ask(held, "syn", 4.0)[0] in (200, 503) and _limit(url) == 0, "the limit dropped")
        for i in range(20):
            status, _, body = _ask(connections[i], "syn", 5.0 + i)
            assert status == 200 and json.loads(body)["outputs"][0]["data"] == [5.0 + i]
    finally:
        channel.close()
        for sock in [held, *connections]:
            sock.close()
