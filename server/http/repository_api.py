"""The KServe V2 repository extension as Triton serves it: index, load (with a config override), unload.

``POST /v2/repository/index``                   body ``{"ready": true}`` (optional): only versions ready
``POST /v2/repository/models/{name}/load``      body ``{"parameters": {"config": "<model.yaml keys as JSON>"}}``
                                                (optional): load, or load again with changed settings
``POST /v2/repository/models/{name}/unload``    body ``{"parameters": {"unload_dependents": ...}}`` (ignored)

Loading and unloading need ``--model-control-mode explicit`` (server/models/control.py); with tokens, every
route here needs the ``admin`` scope (server/admission/routes.py). In a front-end process the call is relayed to
the engine, which owns the repository. gRPC's RepositoryModelLoad and RepositoryModelUnload go through
:func:`control` too.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.admission.routes import visible
from server.codecs import loads
from server.core.errors import BadRequest, error_response, json_response
from server.http.body import read_body
from server.models.control import check_name

router = APIRouter()
_PARAMETERS = {"load": frozenset({"config"}), "unload": frozenset({"unload_dependents"})}


async def control(state: Any, action: str, name: str, parameters: Awaitable[Any]) -> None:
    """Load or unload model ``name`` (``action``) with the ``parameters`` awaited first, counted in the
    model_control metric by outcome; the error, if any, is raised."""
    outcome = "error"
    try:
        given = await parameters
        allowed = _PARAMETERS[action]
        if not isinstance(given, dict):
            raise BadRequest("'parameters' must be an object")
        unknown = sorted(set(given) - allowed)
        if unknown:  # Triton's file:<path> overrides among them: model files come only from the repository
            raise BadRequest(f"parameter {unknown[0]!r} is not supported; parameters: {sorted(allowed)}")
        if action == "load":
            await state.service.repository.load_model(name, given.get("config"))
        else:
            await state.service.repository.unload_model(name)
        outcome = "ok"
    finally:
        state.metrics.model_control.labels(action, outcome).inc()


async def _document(request: Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is an empty object)."""
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    if not body.strip():
        return {}
    document = loads(body)
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    return document


async def _parameters(request: Request, name: str) -> Any:
    check_name(name)
    return (await _document(request)).get("parameters", {})


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> Response:
    """Every model in the repository, each version's state (READY, LOADING, UNLOADING, UNAVAILABLE) and reason."""
    try:
        ready = (await _document(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise BadRequest("'ready' must be true or false")
        return json_response(visible(request.state, await request.app.state.service.repository.index(ready)))
    except Exception as error:
        return error_response(error)


@router.post("/v2/repository/models/{name}/load")
async def load(request: Request, name: str) -> Response:
    """Load the model (its versions loaded and warmed before they serve), or apply its changed settings."""
    try:
        await control(request.app.state, "load", name, _parameters(request, name))
        rows = [row for row in await request.app.state.service.repository.index() if row["name"] == name]
    except Exception as error:
        return error_response(error)
    return json_response({"name": name, "versions": rows})


@router.post("/v2/repository/models/{name}/unload")
async def unload(request: Request, name: str) -> Response:
    """Unload every version of the model once its queued requests are answered."""
    try:
        await control(request.app.state, "unload", name, _parameters(request, name))
    except Exception as error:
        return error_response(error)
    return json_response({"name": name, "versions": []})
