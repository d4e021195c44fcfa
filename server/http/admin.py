"""Operator endpoints: an on-demand rescan (the repository index is in repository_api.py).

The rescan follows ``--model-control-mode`` (server/models/control.py: check_rescan): ``poll`` scans every
model folder now, ``explicit`` the loaded models only, and ``none`` refuses (400) and changes nothing. The mode
is checked here, before a front end relays the call to the engine.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.admission.routes import visible
from server.core.errors import error_response, json_response
from server.models.control import ModelControlError, check_rescan

router = APIRouter()


@router.post("/admin/repository/sync")
async def sync(request: Request) -> Response:
    """Scan the repository now instead of waiting for the next poll."""
    repository = request.app.state.service.repository
    try:
        check_rescan(request.app.state.settings.model_control_mode)
    except ModelControlError as error:
        return error_response(error)
    await repository.sync()
    return json_response(visible(request.state, await repository.index()))
