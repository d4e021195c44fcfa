"""Model control modes and the V2 repository API: load, unload, load with a config override, a changed
model.yaml applied beside the served version, names that try to leave the repository."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.observe import metric, row_body, synthetic_repository, wait_until
from tests.secure import GuardedServer, bearer, write_tokens


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = synthetic_repository(tmp_path / "repo")
    shutil.copytree(root / "syn", root / "other")
    return root


def config_of(repository: Path, **changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((repository / "syn" / "model.yaml").read_text())
    return {**config, **changes}


def post(server: GuardedServer, path: str, body: Any = None) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=30)


def index(server: GuardedServer) -> dict[str, tuple[str, str]]:
    return {row["name"]: (row["version"], row["state"]) for row in post(server, "/v2/repository/index").json()}


def series(server: GuardedServer, name: str, **labels: str) -> list[float]:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())]


class Traffic:
    """Requests to ``syn`` in a thread until stopped; every status kept."""

    def __init__(self, server: GuardedServer) -> None:
        self.server, self.codes = server, []  # type: list[int]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as http:
            while not self._stop.is_set():
                self.codes.append(http.post("/v2/models/syn/infer", json=row_body(1.0)).status_code)

    def __enter__(self) -> Traffic:
        self._thread.start()
        wait_until(lambda: len(self.codes) >= 3, "traffic to start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("frontends", [1, 2])
def test_explicit_mode_loads_and_unloads_through_the_api(start_guarded: Any, repository: Path,
                                                         frontends: int) -> None:
    server = start_guarded(repository, model_control_mode="explicit", frontends=frontends)
    assert index(server) == {"other": ("", "UNAVAILABLE"), "syn": ("", "UNAVAILABLE")}
    assert post(server, "/v2/models/syn/infer", row_body(1.0)).status_code == 404

    loaded = post(server, "/v2/repository/models/syn/load")
    assert loaded.status_code == 200, loaded.text
    assert [(r["version"], r["state"]) for r in loaded.json()["versions"]] == [("1", "READY")]
    assert index(server) == {"other": ("", "UNAVAILABLE"), "syn": ("1", "READY")}
    assert post(server, "/v2/models/syn/infer", row_body(2.0)).json()["outputs"][0]["data"] == [2.0]
    assert httpx.get(f"{server.url}/v1/models/syn").json()["model_version_status"][0]["state"] == "AVAILABLE"
    assert metric(server.url, "batchserve_model_ready", model="syn") == 1
    assert [r["name"] for r in post(server, "/v2/repository/index", {"ready": True}).json()] == ["syn"]

    with Traffic(server) as traffic:
        unloaded = post(server, "/v2/repository/models/syn/unload", {"parameters": {"unload_dependents": True}})
        done = len(traffic.codes)  # the request in flight now may have started before the unload answered
        wait_until(lambda: len(traffic.codes) > done + 2, "requests after the unload")
    assert unloaded.status_code == 200, unloaded.text
    assert set(traffic.codes) <= {200, 404, 503}
    assert set(traffic.codes[done + 1:]) == {404}  # drained, then gone
    assert post(server, "/v2/models/syn/infer", row_body(1.0)).status_code == 404
    assert index(server)["syn"] == ("", "UNAVAILABLE")
    assert series(server, "batchserve_model_ready", model="syn") == []  # unloaded on purpose: no series
    assert metric(server.url, "batchserve_model_control_total", action="load", outcome="ok") == 1
    assert metric(server.url, "batchserve_model_control_total", action="unload", outcome="ok") == 1
    assert post(server, "/v2/repository/models/syn/unload").status_code == 404  # not loaded now
    assert post(server, "/v2/repository/models/nothing/load").status_code == 404


def test_load_models_at_start_and_a_config_override_switches_without_failing_requests(
        start_guarded: Any, repository: Path) -> None:
    server = start_guarded(repository, model_control_mode="explicit", load_models="syn")
    assert index(server) == {"other": ("", "UNAVAILABLE"), "syn": ("1", "READY")}
    assert metric(server.url, "batchserve_max_batch_size", model="syn") == 4
    with Traffic(server) as traffic:
        override = post(server, "/v2/repository/models/syn/load",  # a JSON string, as Triton's clients send it
                        {"parameters": {"config": json.dumps(config_of(repository, max_batch_size=2))}})
        assert override.status_code == 200, override.text
        assert metric(server.url, "batchserve_max_batch_size", model="syn") == 2
        again = post(server, "/v2/repository/models/syn/load")  # no config: model.yaml again
        assert again.status_code == 200, again.text
    assert metric(server.url, "batchserve_max_batch_size", model="syn") == 4
    assert metric(server.url, "batchserve_model_ready", model="syn") == 1
    assert traffic.codes and set(traffic.codes) == {200}  # no request failed across two switches


def test_explicit_mode_applies_a_changed_model_yaml_only_when_loaded(start_guarded: Any, repository: Path) -> None:
    server = start_guarded(repository, model_control_mode="explicit", load_models="syn,missing", poll_interval=0.1)
    (repository / "syn" / "model.yaml").write_text(yaml.safe_dump(config_of(repository, max_batch_size=3)))
    assert post(server, "/admin/repository/sync").status_code == 200  # a scan: explicit mode has no watcher...
    assert metric(server.url, "batchserve_max_batch_size", model="syn") == 3  # ...but a scan applies it
    (repository / "syn" / "model.yaml").write_text(yaml.safe_dump(config_of(repository, max_batch_size=2)))
    with Traffic(server) as traffic:
        assert metric(server.url, "batchserve_max_batch_size", model="syn") == 3  # explicit mode: no watcher
        assert post(server, "/v2/repository/models/syn/load").status_code == 200
        assert metric(server.url, "batchserve_max_batch_size", model="syn") == 2
    assert set(traffic.codes) == {200}
    assert "['missing'] are to be served but have no folder" in server.log()


def test_a_failed_reload_keeps_the_served_version(start_guarded: Any, repository: Path) -> None:
    server = start_guarded(repository, model_control_mode="explicit", load_models="*")
    assert index(server) == {"other": ("1", "READY"), "syn": ("1", "READY")}
    broken = config_of(repository, max_batch_size=2, synthetic={"error_rate": 1.0})
    answer = post(server, "/v2/repository/models/syn/load", {"parameters": {"config": broken}})
    assert answer.status_code == 400 and "previous settings" in answer.json()["error"], answer.text
    assert post(server, "/v2/models/syn/infer", row_body(3.0)).json()["outputs"][0]["data"] == [3.0]
    assert metric(server.url, "batchserve_max_batch_size", model="syn") == 4
    assert metric(server.url, "batchserve_model_ready", model="syn") == 1
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


@pytest.mark.parametrize("frontends", [1, 2])
def test_a_failed_first_load_is_undone_and_the_server_stays_ready(start_guarded: Any, repository: Path,
                                                                  frontends: int) -> None:
    server = start_guarded(repository, model_control_mode="explicit", load_models="other", frontends=frontends)
    broken = config_of(repository, synthetic={"error_rate": 1.0})  # fails its warm-up
    answer = post(server, "/v2/repository/models/syn/load", {"parameters": {"config": broken}})
    assert answer.status_code == 400 and "was not loaded: " in answer.json()["error"], answer.text
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
    (row,) = [r for r in post(server, "/v2/repository/index").json() if r["name"] == "syn"]
    assert (row["state"], row["reason"].split(":")[0]) == ("UNAVAILABLE", "failed to load")
    assert series(server, "batchserve_model_ready", model="syn") == []
    assert post(server, "/v2/models/syn/infer", row_body(1.0)).status_code == 404
    assert post(server, "/v2/repository/models/syn/load").status_code == 200  # model.yaml: loads
    assert index(server) == {"other": ("1", "READY"), "syn": ("1", "READY")}


@pytest.mark.parametrize(("body", "message"), [
    ({"parameters": {"config": {"max_batch_sise": 2}}}, "unknown key 'max_batch_sise'"),
    ({"parameters": {"config": "{not json"}}, "not valid JSON"),
    ({"parameters": {"config": [1]}}, "must be an object"),
    ({"parameters": {"file:1/model.savedmodel": "AAAA"}}, "'file:1/model.savedmodel' is not supported"),
    ({"parameters": []}, "'parameters' must be an object"),
    ([1], "must be a JSON object"),
])
def test_bad_load_requests_are_400_naming_the_problem(start_guarded: Any, repository: Path, body: Any,
                                                      message: str) -> None:
    server = start_guarded(repository, model_control_mode="explicit")
    answer = post(server, "/v2/repository/models/syn/load", body)
    assert answer.status_code == 400 and message in answer.json()["error"], answer.text


@pytest.mark.parametrize("mode", ["poll", "none"])
def test_load_and_unload_are_refused_outside_explicit_mode(start_guarded: Any, repository: Path, mode: str) -> None:
    server = start_guarded(repository, model_control_mode=mode, poll_interval=0)
    for action in ("load", "unload"):
        answer = post(server, f"/v2/repository/models/syn/{action}")
        assert answer.status_code == 400 and f"model_control_mode={mode}" in answer.json()["error"]
    assert index(server) == {"other": ("1", "READY"), "syn": ("1", "READY")}


@pytest.mark.parametrize("frontends", [1, 2])
def test_poll_mode_applies_a_changed_model_yaml_beside_the_served_version(start_guarded: Any, repository: Path,
                                                                          frontends: int) -> None:
    server = start_guarded(repository, poll_interval=0.2, frontends=frontends)
    assert metric(server.url, "batchserve_max_batch_size", model="syn") == 4
    with Traffic(server) as traffic:
        (repository / "syn" / "model.yaml").write_text(yaml.safe_dump(config_of(repository, max_batch_size=3)))
        wait_until(lambda: metric(server.url, "batchserve_max_batch_size", model="syn") == 3, "the new settings")
        done = len(traffic.codes)
        wait_until(lambda: len(traffic.codes) > done + 3, "requests after the switch")
    assert set(traffic.codes) == {200}
    assert metric(server.url, "batchserve_model_ready", model="syn") == 1
    assert index(server)["syn"] == ("1", "READY")


TRAVERSALS = ["..", "%2e%2e", "..%2F..%2Fetc", "%2E%2E%2Fsyn", "a..b", ".hidden", "-x", "x" * 129, "%00",
              "syn%2F..%2F..%2Fetc", "..%5C..%5Cwindows"]


def raw(server: GuardedServer, method: str, path: str, body: Any = None) -> tuple[int, str]:
    """The status and body for exactly this path (http.client sends it as given: no dot-segment removal)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request(method, path, json.dumps(body) if body is not None else None,
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_names_that_leave_the_repository_are_refused(start_guarded: Any, repository: Path) -> None:
    server = start_guarded(repository, model_control_mode="explicit", load_models="syn")
    for name in TRAVERSALS:
        for action in ("load", "unload"):
            status, text = raw(server, "POST", f"/v2/repository/models/{name}/{action}")
            assert status in (400, 404), (name, status, text)
        for method, path in (("POST", f"/v2/models/{name}/infer"), ("GET", f"/v2/models/{name}"),
                             ("POST", f"/v1/models/{name}:predict"), ("GET", f"/v1/models/{name}/metadata"),
                             ("POST", f"/v2/models/{name}/versions/1/infer"), ("GET", f"/v1/models/{name}")):
            status, text = raw(server, method, path, row_body(1.0))
            assert status in (400, 404), (path, status, text)
    assert index(server) == {"other": ("", "UNAVAILABLE"), "syn": ("1", "READY")}


def test_absolute_paths_and_symlinks_out_are_never_served(start_guarded: Any, repository: Path,
                                                          tmp_path: Path) -> None:
    outside = synthetic_repository(tmp_path / "outside")  # a valid model, outside the repository
    (repository / "escape").symlink_to(outside / "syn", target_is_directory=True)
    (repository / "alias").symlink_to(repository / "other", target_is_directory=True)  # inside: fine
    server = start_guarded(repository, model_control_mode="explicit")
    answer = post(server, "/v2/repository/models/escape/load")
    assert answer.status_code == 400 and "outside the repository" in answer.json()["error"]
    assert post(server, "/v2/repository/models/alias/load").status_code == 200
    for path in (f"/v2/repository/models/{outside / 'syn'}/load", "/v2/repository/models//etc/load",
                 f"/v2/repository/models/{'%2F'.join(str(outside / 'syn').split('/'))}/load"):
        status, text = raw(server, "POST", path)
        assert status in (400, 404), (path, text)
    assert "escape" not in index(server)


def test_poll_mode_skips_a_symlink_out_of_the_repository(start_server: Any, repository: Path,
                                                         tmp_path: Path) -> None:
    outside = synthetic_repository(tmp_path / "outside")
    (repository / "escape").symlink_to(outside / "syn", target_is_directory=True)
    server = start_server(repository, poll_interval=0)
    assert httpx.get(f"{server.url}/v2/models/escape").status_code == 404
    assert httpx.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0)).status_code == 200
    assert "is not served" in server.log()


def test_tritonclient_loads_unloads_and_indexes_with_a_token(start_guarded: Any, repository: Path,
                                                             tmp_path: Path) -> None:
    httpclient = pytest.importorskip("tritonclient.http")
    server = start_guarded(repository, model_control_mode="explicit",
                           auth_tokens_file=write_tokens(tmp_path / "tokens.yaml"))
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"))
    operator = bearer("all")
    try:
        with pytest.raises(httpclient.InferenceServerException, match="bearer token is required"):
            client.load_model("syn")
        client.load_model("syn", headers=operator, config=json.dumps(config_of(repository, max_batch_size=2)))
        assert client.is_model_ready("syn", headers=operator)
        assert {(m["name"], m.get("state")) for m in client.get_model_repository_index(headers=operator)} == {
            ("syn", "READY"), ("other", "UNAVAILABLE")}
        with pytest.raises(httpclient.InferenceServerException, match="not supported"):
            client.load_model("syn", headers=operator, config="{}", files={"file:1/model.savedmodel": b"x"})
        client.unload_model("syn", headers=operator)
        assert not client.is_model_ready("syn", headers=operator)
    finally:
        client.close()
