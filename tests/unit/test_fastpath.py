"""The inference fast path claims exactly the inference routes FastAPI also declares."""

import pytest

from server.app import create_app
from server.http.fastpath import match


@pytest.mark.parametrize("path", [
    "/v2/models/m/infer", "/v2/models/m/versions/2/infer", "/v1/models/m:predict",
    "/v1/models/m/versions/1:predict", "/v1/models/m/labels/stable:predict",
])
def test_inference_paths_are_claimed(path):
    assert match(path) is not None


@pytest.mark.parametrize("path", [
    "/v2/models/m/ready", "/v2/models//infer", "/v2/models/m/versions//infer", "/v1/models/m", "/v1/models/:predict",
    "/v2/models/m/infer/extra", "/metrics", "/v2", "/v1/models/m/other/x:predict", "/x/models/m/infer",
])
def test_other_paths_go_to_fastapi(path):
    assert match(path) is None


def test_every_claimed_route_also_exists_in_fastapi():
    """Served without the fast path (create_app alone), the same requests reach the same handlers."""
    paths = create_app().openapi()["paths"]
    post_routes = {path for path, methods in paths.items() if "post" in methods}
    assert {"/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/v1/models/{name}:predict",
            "/v1/models/{name}/versions/{version}:predict", "/v1/models/{name}/labels/{label}:predict"} <= post_routes
