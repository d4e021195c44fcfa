"""FastAPI declares no inference route: both HTTP entries answer them from the one route table
(server/admission/routes.py), through InferenceService.infer."""

from server.app import create_app


def test_fastapi_declares_no_inference_route() -> None:
    paths = create_app().openapi()["paths"]
    assert not [path for path, methods in paths.items() if "post" in methods
                and (path.endswith("/infer") or path.endswith(":predict"))]
