"""server.admission.routes.route: the scope and model every route needs, and which are inference routes (a table)."""

from __future__ import annotations

import pytest

from server.admission.routes import Route, route


def requirement(method: str, path: str, protect_health: bool) -> tuple[str, str | None] | None:
    found = route(method, path, protect_health)
    return None if found.scope is None else (found.scope, found.model)


@pytest.mark.parametrize(("method", "path", "need"), [
    ("POST", "/v2/models/m/infer", ("infer", "m")),
    ("POST", "/v2/models/m/versions/3/infer", ("infer", "m")),
    ("POST", "/v1/models/m:predict", ("infer", "m")),
    ("POST", "/v1/models/m/versions/3:predict", ("infer", "m")),
    ("POST", "/v1/models/m/labels/stable:predict", ("infer", "m")),
    ("POST", "/v1/models/a:b:predict", ("infer", "a:b")),  # the router's name, exactly
    ("GET", "/v2/models/m/infer", ("metadata", "m")),  # not a POST: no inference (405 after the check)
    ("GET", "/v2/models/m", ("metadata", "m")),
    ("GET", "/v2/models/m/versions/3/ready", ("metadata", "m")),
    ("GET", "/v1/models/m", ("metadata", "m")),
    ("GET", "/v1/models/m/metadata", ("metadata", "m")),
    ("GET", "/v1/models/a:b", ("metadata", "a:b")),
    ("POST", "/v1/models/other:predict/../m:predict", ("infer", "other:predict")),  # no route: 404 after
    ("GET", "/v2/models", ("metadata", None)),
    ("GET", "/v2", ("metadata", None)),
    ("GET", "/metrics", ("metrics", None)),
    ("POST", "/v2/repository/index", ("admin", None)),
    ("POST", "/v2/repository/models/m/load", ("admin", "m")),
    ("POST", "/v2/repository/models/m/unload", ("admin", "m")),
    ("POST", "/admin/repository/sync", ("admin", None)),
    ("GET", "/docs", ("metadata", None)),
    ("GET", "//v2/models/m/infer", ("metadata", None)),
    ("GET", "/anything/else", ("metadata", None)),
    ("GET", "", ("metadata", None)),
])
def test_every_path_needs_a_scope(method: str, path: str, need: tuple[str, str | None]) -> None:
    assert requirement(method, path, protect_health=False) == need


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_health_is_open_unless_protected(path: str) -> None:
    assert requirement("GET", path, protect_health=False) is None
    assert requirement("GET", path, protect_health=True) == ("health", None)


@pytest.mark.parametrize(("path", "found"), [
    ("/v2/models/m/infer", Route("infer", "m", "v2")),
    ("/v2/models/m/versions/2/infer", Route("infer", "m", "v2", "2")),
    ("/v1/models/m:predict", Route("infer", "m", "tfserving")),
    ("/v1/models/m/versions/1:predict", Route("infer", "m", "tfserving", "1")),
    ("/v1/models/m/labels/stable:predict", Route("infer", "m", "tfserving", None, "stable")),
])
def test_inference_routes_name_their_protocol_version_and_label(path: str, found: Route) -> None:
    assert route("POST", path, protect_health=False) == found


@pytest.mark.parametrize("path", [
    "/v2/models/m/ready", "/v2/models//infer", "/v2/models/m/versions//infer", "/v1/models/m", "/v1/models/:predict",
    "/v2/models/m/infer/extra", "/metrics", "/v2", "/v1/models/m/other/x:predict", "/x/models/m/infer",
])
def test_other_paths_are_not_inference_routes(path: str) -> None:
    assert route("POST", path, protect_health=False).inference is None
