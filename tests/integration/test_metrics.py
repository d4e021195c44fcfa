"""/metrics after real traffic: every metric DESIGN.md names, with values that add up."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from ..servers import free_port

DESIGN_METRICS = {
    "batchserve_requests", "batchserve_request_duration_seconds", "batchserve_queue_duration_seconds",
    "batchserve_compute_duration_seconds", "batchserve_batch_size", "batchserve_inferences",
    "batchserve_queue_depth", "batchserve_inflight_batches", "batchserve_rejected", "batchserve_model_ready",
}


def families(url: str, accept: str | None = None) -> dict:
    response = httpx.get(f"{url}/metrics", headers={"Accept": accept} if accept else None)
    assert response.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(response.text)}, response


def value(family, **labels) -> float:
    total = 0.0
    for sample in family.samples:
        if all(sample.labels.get(k) == v for k, v in labels.items()) and not sample.name.endswith(("_created",)):
            if sample.name == family.name + "_total" or sample.name == family.name:
                total += sample.value
    return total


def test_every_design_metric_is_exposed_with_sensible_values(demo_server):
    before, _ = families(demo_server.url)
    rows_before = value(before["batchserve_inferences"], model="scale", version="1") if "batchserve_inferences" in before else 0
    for rows in (1, 2, 3):
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": [1.0] * (4 * rows)}]}
        assert httpx.post(f"{demo_server.url}/v2/models/scale/infer", json=body).status_code == 200
    assert httpx.post(f"{demo_server.url}/v2/models/scale/infer", json={"inputs": []}).status_code == 400
    after, response = families(demo_server.url)
    assert response.headers["content-type"].startswith("text/plain")
    assert DESIGN_METRICS <= set(after)
    assert value(after["batchserve_inferences"], model="scale", version="1") - rows_before == 6
    assert value(after["batchserve_requests"], model="scale", protocol="v2", code="200") >= 3
    assert value(after["batchserve_requests"], model="scale", protocol="v2", code="400") >= 1
    assert value(after["batchserve_rejected"], model="scale", reason="invalid") >= 1
    assert value(after["batchserve_model_ready"], model="spam", version="1") == 1
    assert value(after["batchserve_queue_depth"], model="scale", version="1") == 0
    assert value(after["batchserve_inflight_batches"], model="scale", version="1") == 0
    for name in ("batchserve_slo_requests", "batchserve_padding_rows", "batchserve_model_load_duration_seconds",
                 "batchserve_model_warmup_duration_seconds", "batchserve_queue_capacity", "batchserve_slo_target_seconds",
                 "batchserve_predicted_compute_seconds", "batchserve_predicted_wait_seconds"):
        assert name in after, name
    assert value(after["batchserve_slo_requests"], model="scale", outcome="good") >= 3
    labels = {k for f in after.values() for s in f.samples for k in s.labels}
    # batch_size: the predicted compute at the warm-up sizes only (powers of two up to the max): bounded;
    # action: the repository API's load | unload | reload (other tests on this shared server may call it);
    # signature: "" (no label, to Prometheus) for the demo models, which serve one signature each;
    # role, index: the process_* series, one per server process; gpu_uuid: the GPU series, one per device
    assert labels <= {"model", "version", "protocol", "code", "reason", "backend", "device", "outcome", "le", "batch_size",
                      "action", "signature", "role", "index", "gpu_uuid"}
    assert {s.labels["signature"] for f in after.values() for s in f.samples if "signature" in s.labels} == {""}
    assert value(after["process_resident_memory_bytes"], role="server", index="0") > 2**20


def test_openmetrics_when_the_scraper_asks(demo_server):
    _, response = families(demo_server.url, "application/openmetrics-text; version=1.0.0")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_padding_rows_are_counted_apart_from_real_rows(start_server, demo_repository, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(demo_repository / "scale", repo / "scale")
    (repo / "scale" / "model.yaml").write_text("max_batch_size: 8\nallowed_batch_sizes: [4, 8]\n")
    metrics_port = free_port()
    server = start_server(repo, poll_interval=0, metrics_port=metrics_port)
    x = np.ones((3, 4), np.float32)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.reshape(-1).tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/scale/infer", json=body)
    assert response.status_code == 200 and response.json()["outputs"][0]["shape"] == [3, 4]
    metrics, _ = families(server.url)
    assert value(metrics["batchserve_inferences"], model="scale") == 3
    assert value(metrics["batchserve_padding_rows"], model="scale") == 1
    separate, _ = families(f"http://127.0.0.1:{metrics_port}")  # --metrics-port serves the same registry
    assert value(separate["batchserve_padding_rows"], model="scale") == 1
