"""The KServe V2 repository extension as Triton serves it: index, load (with a config override), unload.

``POST /v2/repository/index``                   body ``{"ready": true}`` (optional): only versions ready
``POST /v2/repository/models/{name}/load``      body ``{"parameters": {"config": "<model.yaml keys as JSON>"}}``
                                                (optional): load, or load again with changed settings
``POST /v2/repository/models/{name}/unload``    body ``{"parameters": {"unload_dependents": ...}}`` (ignored)

Loading and unloading need ``--model-control-mode explicit`` (server/models/control.py); with tokens, every
route here needs the ``admin`` scope (server/admission/routes.py). In a front-end process the call is relayed to
the engine, which owns the repository.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.admission.routes import visible
from server.codecs import dumps, loads
from server.core.errors import BadRequest, error_response
from server.http.body import read_body
from server.models.control import check_name

router = APIRouter()
_LOAD_PARAMETERS = frozenset({"config"})
_UNLOAD_PARAMETERS = frozenset({"unload_dependents"})


def _json(body: Any) -> Response:
    return Response(dumps(body), media_type="application/json")


async def _document(request: Request) -> dict[str, Any]:
    """The request's JSON object (an empty body is an empty object)."""
    body = await read_body(request, request.app.state.settings.max_body_bytes)
    if not body.strip():
        return {}
    document = loads(body)
    if not isinstance(document, dict):
        raise BadRequest("the request body must be a JSON object")
    return document


def _parameters(document: dict[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    unknown = sorted(set(parameters) - allowed)
    if unknown:  # Triton's file:<path> overrides among them: model files come only from the repository
        raise BadRequest(f"parameter {unknown[0]!r} is not supported; parameters: {sorted(allowed)}")
    return parameters


def _count(request: Request, action: str, outcome: str) -> None:
    request.app.state.metrics.model_control.labels(action, outcome).inc()


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> Response:
    """Every model in the repository, each version's state (READY, LOADING, UNLOADING, UNAVAILABLE) and reason."""
    try:
        ready = (await _document(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise BadRequest("'ready' must be true or false")
        return _json(visible(request.state, await request.app.state.service.repository.index(ready)))
    except Exception as error:
        return error_response(error)


@router.post("/v2/repository/models/{name}/load")
async def load(request: Request, name: str) -> Response:
    """Load the model (its versions loaded and warmed before they serve), or apply its changed settings."""
    try:
        check_name(name)
        config = _parameters(await _document(request), _LOAD_PARAMETERS).get("config")
        repository = request.app.state.service.repository
        await repository.load_model(name, config)
        rows = [row for row in await repository.index() if row["name"] == name]
    except Exception as error:
        _count(request, "load", "error")
        return error_response(error)
    _count(request, "load", "ok")
    return _json({"name": name, "versions": rows})


@router.post("/v2/repository/models/{name}/unload")
async def unload(request: Request, name: str) -> Response:
    """Unload every version of the model once its queued requests are answered."""
    try:
        check_name(name)
        _parameters(await _document(request), _UNLOAD_PARAMETERS)
        await request.app.state.service.repository.unload_model(name)
    except Exception as error:
        _count(request, "unload", "error")
        return error_response(error)
    _count(request, "unload", "ok")
    return _json({"name": name, "versions": []})
