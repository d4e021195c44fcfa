"""Operator endpoints: an on-demand rescan (the repository index is in repository_api.py)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.admission.routes import visible
from server.codecs import dumps

router = APIRouter()


@router.post("/admin/repository/sync")
async def sync(request: Request) -> Response:
    """Scan the repository now instead of waiting for the next poll."""
    repository = request.app.state.service.repository
    await repository.sync()
    return Response(dumps(visible(request.state, await repository.index())), media_type="application/json")
