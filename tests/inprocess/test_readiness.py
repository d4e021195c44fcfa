"""Server readiness for Kubernetes (issue 24): a model serving on with its last good configuration stays ready
(its model.yaml's error in its status, a metric and the index); a model that never loaded makes the server
unready only under strict_readiness (the default). The same in the front-end layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from ..harness import Served, broken_model, serving, synthetic_model, until
from ..payloads import INFER, row_body


def break_yaml(root: Path, name: str) -> None:
    path = root / name / "model.yaml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "no_such_key": 1}))


async def config_error_gauge(served: Served, model: str) -> float | None:
    """batchserve_model_config_error{model}: from /metrics, or the engine's registry (what its front ends merge)."""
    if served.engine is not None:
        return served.engine.metrics.registry.get_sample_value("batchserve_model_config_error", {"model": model})
    return next((value for _, value in await served.samples("batchserve_model_config_error", model=model)), None)


def repository_of(served: Served) -> Any:
    return served.engine.repository if served.engine is not None else served.app.state.service.repository


@pytest.mark.parametrize("frontends", [False, True], ids=["one-process", "front-end"])
async def test_a_broken_edit_keeps_a_serving_model_ready(tmp_path: Path, frontends: bool) -> None:
    root = tmp_path / "repo"
    synthetic_model(root, "syn")
    async with serving(root, frontends=frontends) as served:
        http = served.client("socket")
        assert await config_error_gauge(served, "syn") == 0
        good = (root / "syn" / "model.yaml").read_text()
        break_yaml(root, "syn")
        await repository_of(served).sync()

        async def status_error() -> str:
            body = (await http.get("/v1/models/syn")).json()
            return str(body["model_version_status"][0]["status"]["error_message"])

        assert "no_such_key" in await until(status_error, "the config error in the front end's status")
        status = (await http.get("/v1/models/syn")).json()["model_version_status"]
        assert status[0]["state"] == "AVAILABLE" and status[0]["status"]["error_code"] == "OK"
        assert (await http.get("/v2/health/ready")).status == 200  # the old settings serve on
        assert (await http.get("/v2/models/syn/ready")).status == 200
        assert (await http.post(INFER, row_body(2.5, rows=1))).status == 200
        index = (await http.post("/v2/repository/index", {})).json()
        assert index[0]["state"] == "READY" and "no_such_key" in index[0]["reason"]
        assert await config_error_gauge(served, "syn") == 1

        (root / "syn" / "model.yaml").write_text(good)
        await repository_of(served).sync()
        assert await until(lambda: _cleared(http), "the config error gone")
        assert await config_error_gauge(served, "syn") == 0


async def _cleared(http: Any) -> bool:
    body = (await http.get("/v1/models/syn")).json()
    return body["model_version_status"][0]["status"]["error_message"] == ""


@pytest.mark.parametrize("frontends", [False, True], ids=["one-process", "front-end"])
@pytest.mark.parametrize("strict", [True, False])
async def test_a_model_that_never_loaded_unreadies_only_a_strict_server(tmp_path: Path, frontends: bool,
                                                                       strict: bool) -> None:
    root = tmp_path / "repo"
    synthetic_model(root, "syn")
    async with serving(broken_model(root), frontends=frontends, grpc=True, strict_readiness=strict) as served:
        http = served.client("socket")
        assert (await http.get("/v2/health/ready")).status == (503 if strict else 200)
        assert (await http.get("/v2/models/syn/ready")).status == 200  # per-model readiness unchanged
        assert (await http.get("/v2/models/broken/ready")).status == 503
        assert (await http.post(INFER, row_body(1.5, rows=1))).status == 200
        assert await config_error_gauge(served, "broken") == 1
        service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
        service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")
        assert served.grpc_target is not None
        async with grpc.aio.insecure_channel(served.grpc_target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10)).ready is not strict


async def test_a_server_with_no_model_serving_is_unready_even_when_not_strict(tmp_path: Path) -> None:
    async with serving(broken_model(tmp_path / "repo"), strict_readiness=False) as served:
        assert (await served.client("socket").get("/v2/health/ready")).status == 503
