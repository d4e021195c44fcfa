"""``POST /admin/repository/sync`` in each model control mode: poll rescans every folder, explicit the loaded
models only, none refuses and the served set stays as it started."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observe import synthetic_repository


def served(url: str) -> dict[str, str]:
    rows = httpx.post(f"{url}/v2/repository/index", json={"ready": True}, timeout=30).json()
    return {row["name"]: row["version"] for row in rows}


def sync(url: str) -> httpx.Response:
    return httpx.post(f"{url}/admin/repository/sync", timeout=60)


@pytest.mark.parametrize("frontends", [1, 2])
def test_mode_none_refuses_a_sync_and_serves_on_unchanged(start_server: Any, tmp_path: Path, frontends: int) -> None:
    repo = synthetic_repository(tmp_path / "repo")
    server = start_server(repo, model_control_mode="none", poll_interval=0, frontends=frontends)
    shutil.copytree(repo / "syn", repo / "added")  # a new model...
    shutil.copytree(repo / "syn" / "1", repo / "syn" / "2")  # ...and a new version of the served one
    answer = sync(server.url)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert "repository sync is refused" in error and "model_control_mode=none" in error
    assert served(server.url) == {"syn": "1"}
    assert httpx.get(f"{server.url}/v2/models/added/ready").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/syn/versions/2/ready").status_code == 404
    shutil.rmtree(repo / "syn")  # a removed folder is not noticed either
    assert sync(server.url).status_code == 400
    assert httpx.post(f"{server.url}/v2/models/syn/infer", timeout=30, json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [2.0] * 4}]}).status_code == 200


def test_poll_mode_sync_loads_new_models_and_explicit_mode_only_rescans_the_loaded(start_server: Any,
                                                                                    tmp_path: Path) -> None:
    repo = synthetic_repository(tmp_path / "poll")
    server = start_server(repo, model_control_mode="poll", poll_interval=0)
    shutil.copytree(repo / "syn", repo / "added")
    assert sync(server.url).status_code == 200
    assert served(server.url) == {"added": "1", "syn": "1"}

    repo = synthetic_repository(tmp_path / "explicit")
    server = start_server(repo, model_control_mode="explicit", load_models="syn")
    shutil.copytree(repo / "syn", repo / "added")
    shutil.copytree(repo / "syn" / "1", repo / "syn" / "2")
    assert sync(server.url).status_code == 200
    assert served(server.url) == {"syn": "2"}  # the loaded model's new version (latest:1); no new model
