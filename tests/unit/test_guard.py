"""server.admission.routes.requirement: the scope and model every route needs (a table, no server)."""

from __future__ import annotations

import pytest

from server.admission.routes import requirement


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
