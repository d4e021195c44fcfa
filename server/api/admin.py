"""Operator endpoints: the repository index and an on-demand rescan."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ..codecs import dumps

router = APIRouter()


def _index(request: Request) -> list[dict[str, object]]:
    repository = request.app.state.service.repository
    rows: list[dict[str, object]] = []
    for name in repository.names():
        versions = repository.versions(name)
        error = repository.config_error(name)
        if error and not versions:
            rows.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": error})
        for mv in versions:
            row = {"name": name, "version": str(mv.version), "state": mv.state.value,
                   "reason": mv.error or "", "backend": mv.backend, "device": mv.device}
            pids = getattr(mv.pool, "pids", None)
            if pids is not None:
                row["worker_pids"] = pids
            rows.append(row)
    return rows


@router.post("/v2/repository/index")
async def repository_index(request: Request) -> Response:
    """Triton's repository index: every model version and its state."""
    return Response(dumps(_index(request)), media_type="application/json")


@router.post("/admin/repository/sync")
async def sync(request: Request) -> Response:
    """Scan the repository now instead of waiting for the next poll."""
    await request.app.state.service.repository.sync()
    return Response(dumps(_index(request)), media_type="application/json")
