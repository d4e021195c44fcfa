"""The synthetic backend: served where TensorFlow cannot be imported, and its injected faults."""

from __future__ import annotations

import os

import httpx

from ..observe import metric, row_body, synthetic_repository
from ..payloads import INFER


def test_serves_where_tensorflow_cannot_be_imported(start_server, tmp_path, monkeypatch):
    blocker = tmp_path / "no_tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('tensorflow is not installed here (test)')\n")
    monkeypatch.setenv("PYTHONPATH", f"{blocker.parent}:{os.environ.get('PYTHONPATH', '')}")
    server = start_server(synthetic_repository(tmp_path / "repo"), poll_interval=0, frontends=2)
    response = httpx.post(f"{server.url}{INFER}", json=row_body(2.5, rows=3))
    assert response.status_code == 200
    assert response.json()["outputs"][0] == {"name": "total", "datatype": "FP32", "shape": [3, 1],
                                              "data": [2.5, 2.5, 2.5]}
    metadata = httpx.get(f"{server.url}/v2/models/syn").json()
    assert (metadata["platform"], metadata["backend"]) == ("synthetic", "synthetic")
    assert "tensorflow is not installed here" not in server.log()


def test_error_rate_fails_batches_with_a_500(start_server, tmp_path):
    repository = synthetic_repository(tmp_path / "repo", synthetic={"error_rate": 1.0})
    server = start_server(repository, poll_interval=0, warmup=False)
    response = httpx.post(f"{server.url}{INFER}", json=row_body(1))
    assert response.status_code == 500
    assert response.json()["error"] == "model execution failed: SyntheticError: synthetic failure (error_rate)"
    assert metric(server.url, "batchserve_batches_total", model="syn", outcome="error") == 1


def test_crash_on_value_kills_the_worker_which_comes_back(start_server, tmp_path):
    repository = synthetic_repository(tmp_path / "repo", synthetic={"crash_on_value": 13.0})
    server = start_server(repository, poll_interval=0, workers="process")
    crashed = httpx.post(f"{server.url}{INFER}", json=row_body(13.0), timeout=60)  # run, run again: poison
    assert crashed.status_code == 500
    assert "the input crashed the model syn:1: its worker died running it, and again running it alone" \
        in crashed.json()["error"]
    assert "worker process for syn on cpu:0 died (exit code 70)" in crashed.json()["error"]
    after = httpx.post(f"{server.url}{INFER}", json=row_body(4.0), timeout=60)  # waits for the restarted worker
    assert after.status_code == 200 and after.json()["outputs"][0]["data"] == [4.0]
    assert "worker on cpu:0 restarted" in server.log()
    assert metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="crash") == 2
    assert metric(server.url, "batchserve_lost_batches_total", model="syn") == 2


def test_without_retries_a_crashed_batch_fails_with_503(start_server, tmp_path):
    repository = synthetic_repository(tmp_path / "repo", retry_on_worker_crash=0, synthetic={"crash_on_value": 13.0})
    server = start_server(repository, poll_interval=0, workers="process")
    crashed = httpx.post(f"{server.url}{INFER}", json=row_body(13.0), timeout=60)
    assert crashed.status_code == 503 and crashed.headers["retry-after"] == "1"
    assert "worker process for syn on cpu:0 died (exit code 70)" in crashed.json()["error"]
    assert metric(server.url, "batchserve_worker_restarts_total", model="syn", reason="crash") == 1
