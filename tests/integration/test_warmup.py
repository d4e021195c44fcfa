"""Warm-up with real inputs, on a SavedModel that decodes JPEG bytes in its graph (TF Serving's image pattern):
generated inputs (empty strings) are rejected, yet the version serves, with a warning and a metric saying the
warm-up is incomplete; TF Serving's warm-up records, or model.yaml's warmup_examples, warm it completely; records
the model rejects fail the load with the model's message; process workers warm (and re-warm) with the same data;
each record runs on the signature it names."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import shutil
import signal
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from server.models.config import ModelConfig
from server.runtime.warmup_records import RECORDS_PATH
from server.settings import Settings

from ..models import build_jpeg_model, build_multi_signature_model
from ..observe import metric, wait_until
from ..pools import pool_for
from ..warmup_files import classify_log, predict_log


def jpeg(height: int, width: int, value: int) -> bytes:
    return bytes(tf.io.encode_jpeg(tf.fill([height, width, 3], tf.constant(value, tf.uint8))).numpy())


def write_records(version: Path, *records: bytes) -> None:
    path = version / RECORDS_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:  # TensorFlow's own framing and checksums
        for record in records:
            writer.write(record)


@pytest.fixture(scope="module")
def jpeg_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_jpeg_model(tmp_path_factory.mktemp("jpeg") / "1")


def wait_for_exit(pid: int) -> None:
    """Until every thread of process ``pid`` has exited (its pidfd turns readable; a killed process's main thread
    shows as a zombie earlier, while TensorFlow's threads still exit)."""
    fd = os.pidfd_open(pid)
    try:
        assert select.select([fd], [], [], 60)[0], f"process {pid} still running 60 s after SIGKILL"
    finally:
        os.close(fd)


def warmup_complete(url: str) -> dict[str, float]:
    """batchserve_model_warmup_complete by model (present series only: absent is not 0)."""
    text = httpx.get(f"{url}/metrics").text
    return {s.labels["model"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "batchserve_model_warmup_complete"}


def test_jpeg_model_warms_with_real_inputs_and_serves_without_them(start_server, jpeg_model, tmp_path):
    repo = tmp_path / "repo"
    for name in ("generated", "records", "bad_records", "npz", "json"):
        shutil.copytree(jpeg_model, repo / name / "1")
    images = np.array([jpeg(8, 12, 90), jpeg(5, 7, 30), jpeg(16, 16, 200)], dtype=object)
    write_records(repo / "records" / "1", predict_log({"image_bytes": images}), classify_log(),
                  predict_log({"image_bytes": images[:1]}, "not_served"))
    (repo / "records" / "model.yaml").write_text("scheduling: slo\nslo_ms: 5000\n")  # seeded from the records
    write_records(repo / "bad_records" / "1", predict_log({"image_bytes": np.array([b"not a jpeg"], dtype=object)}))
    np.savez(repo / "npz" / "examples.npz", image_bytes=images[:2].astype(bytes))  # in the model's folder
    (repo / "npz" / "model.yaml").write_text("warmup_examples: examples.npz\n")
    body = {"instances": [{"b64": base64.b64encode(images[2]).decode()}]}
    (repo / "json" / "1" / "examples.json").write_text(json.dumps(body))  # in the version's folder
    (repo / "json" / "model.yaml").write_text("warmup_examples: examples.json\n")
    server = start_server(repo, poll_interval=0, max_batch_size=4, strict_readiness="false")
    wait_until(lambda: len(warmup_complete(server.url)) == 4, "the four good models serving", timeout=120)

    assert warmup_complete(server.url) == {"generated": 0.0, "records": 1.0, "npz": 1.0, "json": 1.0}
    log = server.log()
    assert ("warm-up of model generated is incomplete: the model rejected generated inputs (zeros, empty strings, "
            "dynamic dimensions 1) for signature 'serving_default' at batch sizes [1, 2, 4]: Input is empty.") in log
    assert f"{repo / 'records' / '1' / RECORDS_PATH} record 1 is a classify_log" in log
    assert "requests for signature 'not_served', which is not served" in log
    for name in ("generated", "records", "npz", "json"):  # every one answers right, the first request included
        response = httpx.post(f"{server.url}/v1/models/{name}:predict", json=body, timeout=30)
        assert response.status_code == 200, response.text
        (prediction,) = response.json()["predictions"]
        assert prediction["size"] == [16, 16] and abs(prediction["mean"] - 200) < 2
    assert metric(server.url, "batchserve_predicted_compute_seconds", model="records", batch_size="4") > 0

    (status,) = httpx.get(f"{server.url}/v1/models/bad_records").json()["model_version_status"]
    assert status["state"] == "END"
    error = status["status"]["error_message"]
    assert error.startswith(f"warm-up of bad_records failed on {repo / 'bad_records' / '1' / RECORDS_PATH} record 0 "
                            "(signature 'serving_default', batch size 1): ")
    assert "Unknown image file format" in error  # the model's own message
    assert "bad_records" not in warmup_complete(server.url)


async def test_process_workers_warm_and_rewarm_with_the_records(jpeg_model, tmp_path):
    version = tmp_path / "jpeg" / "1"
    shutil.copytree(jpeg_model, version)
    image = np.array([jpeg(6, 9, 120)], dtype=object)
    write_records(version, predict_log({"image_bytes": image}))
    pool = pool_for(version, ModelConfig(), Settings(workers="process", process_devices=1))
    await pool.start()
    try:
        result = await pool.warm_up([1, 3])
        assert result.complete and [(b.size, b.generated) for b in result.ran] == [(1, False), (3, False)]
        (pid,) = pool.pids  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        wait_for_exit(pid)
        # found dead, the worker restarts and warms with the records (generated inputs would fail its warm-up,
        # retried for ever) before it runs the batch
        outputs = await asyncio.wait_for(pool.run({"image_bytes": image}), timeout=120)
        assert outputs["size"].tolist() == [[6, 9]] and pool.pids != [pid]  # type: ignore[attr-defined]
    finally:
        await pool.close()


async def test_process_workers_serve_when_generated_inputs_are_rejected(jpeg_model, tmp_path):
    pool = pool_for(jpeg_model, ModelConfig(), Settings(workers="process", process_devices=1))
    await pool.start()
    try:
        result = await pool.warm_up([2])
        assert (result.complete, result.ran, [b.size for b in result.rejected]) == (False, [], [2])
        outputs = await pool.run({"image_bytes": np.array([jpeg(3, 4, 10)], dtype=object)})
        assert outputs["size"].tolist() == [[3, 4]]
    finally:
        await pool.close()


async def test_records_run_on_the_signature_they_name(tmp_path):
    version = build_multi_signature_model(tmp_path / "multi" / "1")
    write_records(version, predict_log({"ids": np.array([7, 1], np.int64)}, "embed"),
                  predict_log({"text": np.array([b"abc"], dtype=object)}, "length"))
    pool = pool_for(version)
    await pool.start()
    try:
        result = await pool.warm_up([1, 3])
        assert result.complete
        assert [(b.signature, b.size, b.generated) for b in result.ran] == [
            ("serving_default", 1, True), ("serving_default", 3, True), ("embed", 1, False), ("embed", 3, False),
            ("length", 1, False), ("length", 3, False)]
        assert result.ran[3].inputs["ids"].tolist() == [7, 1, 7]
    finally:
        await pool.close()
