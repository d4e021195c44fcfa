"""A front end that runs far behind refuses scheduling: slo requests before reading their bodies.

The front end is stalled for real (SIGSTOP, then SIGCONT 0.3 s later: its event loop comes back
that far behind, as after a burst it could not keep up with); requests written on open
keep-alive connections while it was stopped are read on its return. The synthetic model
``syn`` is scheduled by SLO (1 s), its twin ``twin`` by the fixed rule: only ``syn``'s requests
are refused, 503 with Retry-After, counted under reason ``overloaded``; ``twin``'s are answered.
Each connection stays usable: the refused body was read and dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ..observe import children, metric, synthetic_repository, wait_until
from ..payloads import grpc_infer_request, grpc_totals
from ..raw_http import read_response as _response
from ..raw_http import request_bytes as _request
from ..servers import ServerProcess


def _state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    stat = open(f"/proc/{pid}/stat").read()
    return stat[stat.rindex(")") + 2]


def _twins(root: Path) -> Path:
    """``syn`` under scheduling: slo (SLO 1 s) and ``twin``, the same model under fixed."""
    repo = synthetic_repository(root, scheduling="slo", slo_ms=1000)
    shutil.copytree(repo / "syn", repo / "twin")
    config = yaml.safe_load((repo / "twin" / "model.yaml").read_text())
    (repo / "twin" / "model.yaml").write_text(yaml.safe_dump({**config, "scheduling": "fixed"}))
    return repo


@contextlib.contextmanager
def _stalled(pids: list[int], seconds: float = 0.3) -> Iterator[None]:
    """The processes stopped while the block runs, and ``seconds`` in all; then continued."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        for pid in pids:  # the signal is delivered asynchronously: stopped before anything is sent
            wait_until(lambda pid=pid: _state(pid) == "T", f"process {pid} stopped", timeout=10)
        yield
        time.sleep(seconds)  # the stall itself: how far behind the loops come back
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def _frontend_pids(server: ServerProcess, frontends: int) -> list[int]:
    return [server.process.pid] if frontends == 1 else children(server.process.pid, "frontend")


@pytest.mark.parametrize("frontends", [1, 2], ids=["1-frontend", "2-frontends"])
def test_a_front_end_far_behind_refuses_slo_requests_and_answers_the_others(start_server, tmp_path, frontends):
    # refused beyond 0.1 of 980 ms (1 s less the 2 % reserve): 98 ms; the stall is 300 ms
    server = start_server(_twins(tmp_path / "repo"), poll_interval=0, frontends=frontends, overload_share=0.1)
    stalled = _frontend_pids(server, frontends)
    models = ["syn", "twin"] * 4
    connections = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in models]
    try:
        for sock, model in zip(connections, models):  # accepted and answered before the stall
            sock.sendall(_request(model, 1.0))
            assert _response(sock)[0] == 200
        with _stalled(stalled):
            for i, (sock, model) in enumerate(zip(connections, models)):
                sock.sendall(_request(model, 10.0 + i))
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
            deadline = time.monotonic() + 10
            while True:
                sock.sendall(_request(model, 2.0))
                status, _, body = _response(sock)
                if status == 200 or time.monotonic() > deadline:
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


@pytest.mark.parametrize("frontends", [1, 2], ids=["1-frontend", "2-frontends"])
def test_grpc_calls_to_a_front_end_far_behind_are_resource_exhausted_for_slo_models(start_server, tmp_path,
                                                                                  frontends):
    pytest.importorskip("tritonclient.grpc.service_pb2")  # the shared request builder needs it
    service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
    server = start_server(_twins(tmp_path / "repo"), poll_interval=0, frontends=frontends, overload_share=0.1)

    models = ["syn", "twin"] * 2
    channels = [grpc.insecure_channel(server.grpc_target) for _ in models]
    try:
        stubs = [service_pb2_grpc.GRPCInferenceServiceStub(channel) for channel in channels]
        for stub, model in zip(stubs, models):  # connected and answered before the stall
            stub.ModelInfer(grpc_infer_request(1.0, model=model), timeout=30)
        with _stalled(_frontend_pids(server, frontends)):
            calls = [stub.ModelInfer.future(grpc_infer_request(10.0 + i, model=model), timeout=30)
                     for i, (stub, model) in enumerate(zip(stubs, models))]
        for call, model, i in zip(calls, models, range(len(models))):
            if model == "syn":
                with pytest.raises(grpc.RpcError) as refused:
                    call.result()
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "overloaded" in refused.value.details()
                assert ("retry-after", "1") in refused.value.trailing_metadata()
            else:
                answer = call.result()
                assert grpc_totals(answer) == [10.0 + i]
    finally:
        for channel in channels:
            channel.close()
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="overloaded") >= 2
    assert metric(server.url, "batchserve_requests_total", model="syn", protocol="grpc", code="503") >= 2
    assert metric(server.url, "batchserve_rejected_total", model="twin", reason="overloaded") == 0
