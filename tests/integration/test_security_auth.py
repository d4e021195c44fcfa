"""Bearer tokens with scopes on every HTTP route: no token, a wrong token, a wrong scope, another model's token.

One server (two synthetic models, 'syn' and 'other') answers the whole table; the in-protocol inference
path, the ASGI path (chunked bodies) and FastAPI's routes all meet the same rule.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observe import row_body, synthetic_repository, wait_until
from tests.secure import GuardedServer, bearer, token, write_tokens

PREDICT = {"instances": [[1.0, 2.0, 3.0, 4.0]]}

# (method, path, body, scope, model, status with the right token)
ROUTES: list[tuple[str, str, Any, str, str | None, int]] = [
    ("POST", "/v2/models/syn/infer", row_body(1.0), "infer", "syn", 200),
    ("POST", "/v2/models/syn/versions/1/infer", row_body(1.0), "infer", "syn", 200),
    ("POST", "/v1/models/syn:predict", PREDICT, "infer", "syn", 200),
    ("POST", "/v1/models/syn/versions/1:predict", PREDICT, "infer", "syn", 200),
    ("POST", "/v1/models/syn/labels/stable:predict", PREDICT, "infer", "syn", 404),
    ("POST", "/v2/models/nothing/infer", row_body(1.0), "infer", "nothing", 404),
    ("GET", "/v2/models/syn", None, "metadata", "syn", 200),
    ("GET", "/v2/models/syn/versions/1", None, "metadata", "syn", 200),
    ("GET", "/v2/models/syn/ready", None, "metadata", "syn", 200),
    ("GET", "/v2/models/syn/versions/1/ready", None, "metadata", "syn", 200),
    ("GET", "/v1/models/syn", None, "metadata", "syn", 200),
    ("GET", "/v1/models/syn/versions/1", None, "metadata", "syn", 200),
    ("GET", "/v1/models/syn/metadata", None, "metadata", "syn", 200),
    ("GET", "/v1/models/syn/versions/1/metadata", None, "metadata", "syn", 200),
    ("GET", "/v2", None, "metadata", None, 200),
    ("GET", "/openapi.json", None, "metadata", None, 200),
    ("GET", "/no/such/route", None, "metadata", None, 404),
    ("GET", "/metrics", None, "metrics", None, 200),
    ("POST", "/v2/repository/index", {}, "admin", None, 200),
    ("POST", "/admin/repository/sync", None, "admin", None, 200),
    ("POST", "/v2/repository/models/syn/load", None, "admin", "syn", 400),  # poll mode: refused after the check
    ("POST", "/v2/repository/models/syn/unload", None, "admin", "syn", 400),
]
IDS = [f"{method} {path}" for method, path, *_ in ROUTES]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = synthetic_repository(tmp_path_factory.mktemp("repo"))
    shutil.copytree(root / "syn", root / "other")
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedServer]:
    folder = tmp_path_factory.mktemp("auth")
    process = GuardedServer(repository, folder / "server.log", poll_interval=0,
                            auth_tokens_file=write_tokens(folder / "tokens.yaml"))
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def call(server: GuardedServer, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, server.url + path, json=body, headers=headers, timeout=10)


def rejected(server: GuardedServer, reason: str) -> float:
    text = httpx.get(f"{server.url}/metrics", headers=bearer("metrics-only"), timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "batchserve_rejected_total" and sample.labels["reason"] == reason)


@pytest.mark.parametrize(("method", "path", "body", "scope", "model", "status"), ROUTES, ids=IDS)
def test_every_route_needs_its_scope(server: GuardedServer, method: str, path: str, body: Any, scope: str,
                                     model: str | None, status: int) -> None:
    missing = call(server, method, path, body, {})
    assert missing.status_code == 401, missing.text
    assert "bearer token is required" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == 'Bearer realm="batchserve"'

    for header in (bearer("unknown"), {"Authorization": token(f"{scope}-only")}, {"Authorization": "Basic abc"}):
        wrong = call(server, method, path, body, header)
        assert wrong.status_code == 401, (header, wrong.text)

    without_scope = call(server, method, path, body, bearer(f"not-{scope}"))
    assert without_scope.status_code == 403, without_scope.text
    assert f"lacks the {scope!r} scope" in without_scope.json()["error"]

    other_model = call(server, method, path, body, bearer("other-model"))
    if model is None:  # a route of no model: a model-limited token with the scope may use it
        assert other_model.status_code == status, other_model.text
    else:
        assert other_model.status_code == 403, other_model.text
        assert f"may not use model {model!r}" in other_model.json()["error"]

    granted = call(server, method, path, body, bearer(f"{scope}-only"))
    assert granted.status_code == status, granted.text


def test_model_limited_token_uses_its_own_model(server: GuardedServer) -> None:
    answer = call(server, "POST", "/v2/models/other/infer", row_body(3.0), bearer("other-model"))
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [3.0]


def test_a_model_limited_token_sees_only_its_models_in_the_index(server: GuardedServer) -> None:
    for path in ("/v2/repository/index", "/admin/repository/sync"):
        limited = call(server, "POST", path, {}, bearer("other-model")).json()
        assert [row["name"] for row in limited] == ["other"]
        assert [row["name"] for row in call(server, "POST", path, {}, bearer("admin-only")).json()] == ["other", "syn"]


def test_health_stays_open(server: GuardedServer) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + path).status_code == 200


def test_chunked_inference_takes_the_asgi_path_and_is_checked_there(server: GuardedServer) -> None:
    body = b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [5, 5, 5, 5]}]}'
    url = f"{server.url}/v2/models/syn/infer"
    assert httpx.post(url, content=iter([body[:10], body[10:]])).status_code == 401
    assert httpx.post(url, content=iter([body[:10], body[10:]]), headers=bearer("not-infer")).status_code == 403
    answer = httpx.post(url, content=iter([body[:10], body[10:]]), headers=bearer("infer-only"))
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [5.0]


def test_a_refused_request_leaves_the_connection_usable(server: GuardedServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        answers = [http.post("/v2/models/syn/infer", json=row_body(float(i)),
                             headers=bearer("infer-only") if i % 2 else {}) for i in range(6)]
    assert [a.status_code for a in answers] == [401, 200] * 3
    assert [a.json()["outputs"][0]["data"] for a in answers[1::2]] == [[1.0], [3.0], [5.0]]


def test_refusals_are_counted_by_reason(server: GuardedServer) -> None:
    before = rejected(server, "unauthenticated"), rejected(server, "forbidden")
    call(server, "POST", "/v2/models/syn/infer", row_body(1.0), {})
    call(server, "GET", "/v2/models/syn", None, bearer("wrong"))
    call(server, "GET", "/v2/models/syn", None, bearer("not-metadata"))
    assert (rejected(server, "unauthenticated"), rejected(server, "forbidden")) == (before[0] + 2, before[1] + 1)


def test_tokens_file_reloads_on_sighup_and_a_bad_edit_keeps_the_old_tokens(
        start_guarded: Any, repository: Path, tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {"tokens": [{"token": token("first"), "scopes": ["metadata"]}]})
    server = start_guarded(repository, poll_interval=0, auth_tokens_file=path, auth_reload_interval=0)
    url = f"{server.url}/v2/models/syn"
    assert httpx.get(url, headers=bearer("first")).status_code == 200

    write_tokens(path, {"tokens": [{"token": token("second"), "scopes": ["metadata"]}]})
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until(lambda: httpx.get(url, headers=bearer("second")).status_code == 200, "the new token")
    assert httpx.get(url, headers=bearer("first")).status_code == 401  # revoked

    path.write_text("tokens: [{token: short}]")
    os.kill(server.process.pid, signal.SIGHUP)
    wait_until(lambda: "tokens file not reloaded" in server.log(), "the refused reload in the log")
    assert httpx.get(url, headers=bearer("second")).status_code == 200


def test_tokens_file_is_polled_for_changes(start_guarded: Any, repository: Path, tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "tokens.yaml", {"tokens": [{"token": token("first"), "scopes": ["metadata"]}]})
    server = start_guarded(repository, poll_interval=0, auth_tokens_file=path, auth_reload_interval=0.1)
    url = f"{server.url}/v2/models/syn"
    write_tokens(path, {"tokens": [{"token": token("second"), "scopes": ["metadata"]}]})
    wait_until(lambda: httpx.get(url, headers=bearer("second")).status_code == 200, "the new token")
    assert httpx.get(url, headers=bearer("first")).status_code == 401


def test_protected_health_needs_any_valid_token(start_guarded: Any, repository: Path, tmp_path: Path) -> None:
    server = start_guarded(repository, poll_interval=0, auth_tokens_file=write_tokens(tmp_path / "t.yaml"),
                           auth_health=True, client={"headers": bearer("metrics-only")})
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers=bearer("wrong")).status_code == 401
        assert httpx.get(server.url + path, headers=bearer("infer-only")).status_code == 200


def test_a_bad_tokens_file_stops_the_start(repository: Path, tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: [{token: short, scopes: [infer]}]")
    server = GuardedServer(repository, tmp_path / "server.log", poll_interval=0, auth_tokens_file=path)
    with pytest.raises(RuntimeError, match="at least 16 characters"):
        server.wait_ready(timeout=60)


def test_front_ends_check_tokens_and_reload_on_sighup(start_guarded: Any, repository: Path, tmp_path: Path
                                                      ) -> None:
    path = write_tokens(tmp_path / "tokens.yaml")
    server = start_guarded(repository, poll_interval=0, frontends=2, auth_tokens_file=path, auth_reload_interval=0)
    with httpx.Client(base_url=server.url) as http:  # new connections: both front ends answer some
        for _ in range(4):
            assert httpx.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0)).status_code == 401
            assert httpx.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0),
                              headers=bearer("other-model")).status_code == 403
            assert httpx.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0),
                              headers=bearer("infer-only")).status_code == 200
        assert http.get("/metrics", headers=bearer("metrics-only")).status_code == 200
    write_tokens(path, {"tokens": [{"token": token("second"), "scopes": ["infer"]}]})
    os.kill(server.process.pid, signal.SIGHUP)  # the supervisor passes it on

    wait_until(lambda: server.log().count("reloaded: 1 tokens") == 2, "both front ends to reload the file")
    for _ in range(8):  # new connections: both front ends answer some
        assert httpx.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0),
                          headers=bearer("second")).status_code == 200
        assert httpx.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0),
                          headers=bearer("infer-only")).status_code == 401


async def test_the_client_sends_its_token_over_http_and_grpc(server: GuardedServer) -> None:
    from server.client import AsyncClient, ForbiddenError, UnauthorizedError

    features = {"features": np.full((2, 4), 3.0, np.float32)}
    for transport, url in (("http", server.url), ("grpc", server.grpc_target)):
        async with AsyncClient(url, transport=transport, token=token("infer-only"), retries=0) as client:
            assert (await client.predict("syn", features))["total"].tolist() == [[3.0], [3.0]]
        async with AsyncClient(url, transport=transport, token=token("metadata-only"), retries=0) as client:
            with pytest.raises(ForbiddenError, match="infer"):
                await client.predict("syn", features)
        async with AsyncClient(url, transport=transport, retries=0) as client:
            with pytest.raises(UnauthorizedError):
                await client.predict("syn", features)
