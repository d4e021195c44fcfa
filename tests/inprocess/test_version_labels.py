"""TF Serving's version labels: predict, status and metadata by label (REST and gRPC); a change of
``version_labels`` in model.yaml relabels in place (no version is loaded or warmed again), in one process and
through a front end; a label that names a version not served is refused when model.yaml is read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from server.grpc import protos

from ..harness import Served, serving, synthetic_model
from ..payloads import grpc_method, tfs_predict_request

ROW = {"instances": [[3, 0, 0, 0]]}


def write(root: Path, **config: Any) -> None:
    """Model ``syn``, versions 1 and 2 both served, with ``config`` (its labels) in model.yaml."""
    synthetic_model(root, "syn", versions=(1, 2), version_policy="all", **config)


def repository_of(served: Served) -> Any:
    return served.engine.repository if served.engine is not None else served.app.state.service.repository


def loaded(served: Served) -> dict[int, tuple[Any, Any, Any]]:
    """Each served version's ModelVersion, batcher and pool: the same objects while nothing reloads."""
    return {mv.version: (mv, mv.batcher, mv.pool) for mv in repository_of(served).versions("syn")}


async def label_version(served: Served, label: str) -> str:
    answer = await served.client("asgi").get(f"/v1/models/syn/labels/{label}")
    assert answer.status == 200, answer.json()
    return str(answer.json()["model_version_status"][0]["version"])


@pytest.mark.parametrize("frontends", [False, True], ids=["one process", "front end"])
async def test_a_relabel_moves_the_label_without_reloading_a_version(tmp_path: Path, frontends: bool) -> None:
    root = tmp_path / "repo"
    write(root, version_labels={"stable": 1, "canary": 1})
    async with serving(root, frontends=frontends) as served:
        http = served.client("asgi")
        before = loaded(served)
        assert await label_version(served, "canary") == "1"
        write(root, version_labels={"stable": 1, "canary": 2, "beta": 2})
        synced = await http.post("/admin/repository/sync")  # relayed to the engine by a front end
        assert synced.status == 200
        assert loaded(served) == before  # the same versions, batchers and pools: nothing loaded or warmed again
        assert [await label_version(served, label) for label in ("stable", "canary", "beta")] == ["1", "2", "2"]
        predicted = await http.post("/v1/models/syn/labels/beta:predict", ROW)
        assert (predicted.status, predicted.json()) == (200, {"predictions": [[3.0]]})
        metadata = await http.get("/v1/models/syn/labels/canary/metadata")
        assert metadata.json()["model_spec"] == {"name": "syn", "signature_name": "", "version": "2"}
        write(root, version_labels={"stable": 2})  # a label removed
        assert (await http.post("/admin/repository/sync")).status == 200
        assert loaded(served) == before
        gone = await http.post("/v1/models/syn/labels/canary:predict", ROW)
        assert gone.status == 404 and "no version label 'canary'" in gone.json()["error"]


async def test_other_settings_still_load_the_versions_again(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, version_labels={"stable": 1})
    async with serving(root) as served:
        before = loaded(served)
        write(root, version_labels={"stable": 2}, max_queue_size=7)  # labels and a batching setting
        await repository_of(served).sync()
        after = loaded(served)
        assert all(after[v][0] is not before[v][0] for v in (1, 2))
        assert after[1][0].batch_config.max_queue_size == 7
        assert await label_version(served, "stable") == "2"


async def test_a_label_for_a_version_not_served_is_refused_when_model_yaml_is_read(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, version_labels={"stable": 1})
    synthetic_model(root, "early", version_labels={"stable": 3})  # only version 1 on disk
    async with serving(root) as served:
        http = served.client("asgi")
        repository = repository_of(served)
        refused = "version_labels: 'stable' names version 3, which is not served (versions served: [1])"
        assert refused in str(repository.config_error("early"))
        answer = await http.post("/v1/models/early:predict", ROW)
        assert answer.status == 503 and refused in answer.json()["error"]
        before = loaded(served)
        write(root, version_labels={"stable": 2, "canary": 9})
        await repository.sync()
        error = str(repository.config_error("syn"))
        assert "'canary' names version 9, which is not served (versions served: [1, 2])" in error
        assert "'stable'" not in error
        assert loaded(served) == before
        assert await label_version(served, "stable") == "1"  # the last good labels serve on
        missing = await http.get("/v1/models/syn/labels/canary")
        assert missing.status == 404


async def test_metadata_by_label(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, version_labels={"stable": 1})
    async with serving(root) as served:
        http = served.client("asgi")
        answer = await http.get("/v1/models/syn/labels/stable/metadata")
        assert answer.status == 200
        body = answer.json()
        assert body["model_spec"] == {"name": "syn", "signature_name": "", "version": "1"}
        assert set(body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]) == {"features"}
        unknown = await http.get("/v1/models/syn/labels/nope/metadata")
        assert unknown.status == 404 and "no version label 'nope'" in unknown.json()["error"]


async def test_grpc_predict_and_metadata_by_version_label(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, version_labels={"stable": 1, "canary": 2})
    async with serving(root, grpc=True, http_socket=False) as served:
        assert served.grpc_target is not None
        async with grpc.aio.insecure_channel(served.grpc_target) as channel:
            predict = grpc_method(channel, protos.PREDICTION_SERVICE, "Predict")
            metadata = grpc_method(channel, protos.PREDICTION_SERVICE, "GetModelMetadata")
            for label, version in (("stable", 1), ("canary", 2)):
                request = tfs_predict_request("syn", label=label, features=np.array([[5, 0, 0, 0]], np.float32))
                answer = await predict(request, timeout=10)
                assert answer.model_spec.version.value == version
                asked = protos.message("tensorflow.serving.GetModelMetadataRequest")()
                asked.model_spec.name, asked.model_spec.version_label = "syn", label
                asked.metadata_field.append("signature_def")
                assert (await metadata(asked, timeout=10)).model_spec.version.value == version
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await predict(tfs_predict_request("syn", label="nope", features=np.zeros((1, 4), np.float32)))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_repository_api_refuses_a_label_for_a_version_not_served(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, version_labels={"stable": 1})
    synthetic_model(root, "early", version_labels={"stable": 3})
    async with serving(root, model_control_mode="explicit", load_models="syn") as served:
        http = served.client("asgi")
        refused = await http.post("/v2/repository/models/early/load")
        assert refused.status == 400
        assert "not loaded: version_labels: 'stable' names version 3, which is not served" in refused.json()["error"]
        assert (await http.get("/v2/health/ready")).status == 200  # a refused load leaves the server as it was
        before = loaded(served)
        write(root, version_labels={"stable": 7})
        kept = await http.post("/v2/repository/models/syn/load")
        assert kept.status == 400 and "serves on with its previous settings: version_labels" in kept.json()["error"]
        assert loaded(served) == before and await label_version(served, "stable") == "1"
        write(root, version_labels={"stable": 2})
        assert (await http.post("/v2/repository/models/syn/load")).status == 200
        assert loaded(served) == before and await label_version(served, "stable") == "2"
