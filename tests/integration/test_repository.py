"""The repository on a live server: version switch under load, broken versions, removal, bad model.yaml."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from server.client import AsyncClient

from ..models import build_scale_model
from ..observe import until, wait_until
from ..servers import ServerProcess

X = np.ones((1, 4), np.float32)


def place(model_dir: Path, version: int, factor: float, staging: Path) -> None:
    """Build a version elsewhere, then move it in whole (as exports should be published)."""
    built = build_scale_model(staging / f"{model_dir.name}-{version}-{factor}", factor)
    model_dir.mkdir(parents=True, exist_ok=True)
    built.rename(model_dir / str(version))


def _versions(url: str, model: str) -> list[tuple[str, str]]:
    status = httpx.get(f"{url}/v1/models/{model}").json()["model_version_status"]
    return [(s["version"], s["state"]) for s in status]


async def test_new_version_takes_traffic_with_zero_failures(start_server, tmp_path):
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    place(repo / "scale", 1, 1.0, staging)
    server = start_server(repo, poll_interval=0.3)
    seen: list[float] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def traffic(client: AsyncClient) -> None:
        while not stop.is_set():
            try:
                seen.append(float((await client.predict("scale", {"x": X}))["y"][0, 0]))
            except Exception as exc:  # every failure is a defect here
                errors.append(exc)

    async with AsyncClient(server.url, retries=0) as client:
        workers = [asyncio.ensure_future(traffic(client)) for _ in range(8)]
        await until(lambda: len(seen) >= 20 or errors, "traffic flowing to version 1")
        place(repo / "scale", 2, 2.0, staging)
        await until(lambda: (seen and seen[-1] == 2.0) or errors, "version 2 answering", timeout=60)
        # keep going while version 1 drains and is retired
        await until(lambda: _versions(server.url, "scale") == [("2", "AVAILABLE")] or errors, "version 1 retired",
                    timeout=60)
        stop.set()
        await asyncio.gather(*workers)
    assert errors == []
    assert seen[0] == 1.0 and seen[-1] == 2.0 and len(seen) > 50
    assert _versions(server.url, "scale") == [("2", "AVAILABLE")]
    ready = [line for line in httpx.get(f"{server.url}/metrics").text.splitlines()
             if line.startswith("batchserve_model_ready{")]
    assert len(ready) == 1 and 'version="2"' in ready[0] and ready[0].endswith(" 1.0")  # v1 retired, not "down"


def test_broken_version_fails_alone_and_removed_model_unloads(start_server, tmp_path):
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    place(repo / "scale", 1, 1.0, staging)
    (repo / "scale" / "model.yaml").write_text("version_policy: all\n")
    broken = repo / "scale" / "2"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00corrupt")
    place(repo / "other", 1, 3.0, staging)
    server = start_server(repo, poll_interval=0.3)
    status = httpx.get(f"{server.url}/v1/models/scale").json()["model_version_status"]
    by_version = {s["version"]: s for s in status}
    assert by_version["1"]["state"] == "AVAILABLE"
    assert by_version["2"]["state"] == "END" and "cannot load SavedModel" in by_version["2"]["status"]["error_message"]
    response = httpx.post(f"{server.url}/v2/models/scale/versions/2/infer",
                          json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]})
    assert response.status_code == 503 and "cannot load SavedModel" in response.json()["error"]
    assert httpx.get(f"{server.url}/v2/models/scale/ready").status_code == 200
    status_v2 = httpx.get(f"{server.url}/v1/models/scale/versions/2")  # TF Serving status: same error shape
    assert status_v2.status_code == 503 and status_v2.headers["retry-after"] == "5"

    shutil.rmtree(repo / "other")
    wait_until(lambda: httpx.get(f"{server.url}/v2/models/other/ready").status_code == 404, "model other unloaded",
               timeout=60)
    assert httpx.get(f"{server.url}/v2/models/scale/ready").status_code == 200


@pytest.mark.parametrize(("yaml_text", "fragment"), [
    ("max_batch_size: 8\nbatch_timeout: 3\n", "unknown key 'batch_timeout'"),
    ("max_batch_size: -2\n", "max_batch_size"),
])
def test_bad_model_yaml_fails_that_model_only(tmp_path, yaml_text, fragment):
    repo, staging = tmp_path / "repo", tmp_path / "staging"
    place(repo / "good", 1, 1.0, staging)
    place(repo / "bad", 1, 1.0, staging)
    (repo / "bad" / "model.yaml").write_text(yaml_text)
    proc = ServerProcess(repo, tmp_path / "s.log", poll_interval=0)
    try:
        wait_until(lambda: _status(proc.url, "good") == 200, "model good available", timeout=180)
        body = httpx.get(f"{proc.url}/v1/models/bad").json()
        (entry,) = body["model_version_status"]
        assert fragment in entry["status"]["error_message"]
        response = httpx.get(f"{proc.url}/v2/models/bad/ready")
        assert response.status_code == 503 and fragment in response.json()["error"]
        assert httpx.get(f"{proc.url}/v2/health/ready").status_code == 503  # not every model is serving
    finally:
        proc.stop()


def _status(url: str, model: str) -> int:
    try:
        return httpx.get(f"{url}/v2/models/{model}/ready", timeout=1).status_code
    except httpx.HTTPError:
        return 0
