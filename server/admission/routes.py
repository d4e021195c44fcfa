"""Every HTTP route in one table: the scope (and model) it needs, and for an inference POST the
protocol, model, version and label the front ends answer it with.

Read by both HTTP entries (the in-protocol path, server/http/protocol.py, and the ASGI one,
server/http/fastpath.py) before any handler runs, and by the admission pipeline
(server/admission/pipeline.py). A path that matches nothing still needs a token (``metadata``), so
a route added later is never open by accident.

Routes and what they need (scope, and the model checked)::

    GET  /v2/health/live, /v2/health/ready               open; any valid token with auth_health
    POST /v2/models/{m}[/versions/{v}]/infer              infer     m   (inference: "v2")
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict infer    m   (inference: "tfserving")
    GET  /v2/models/{m}..., /v1/models/{m}...             metadata  m
    GET  /metrics                                         metrics
    POST /v2/repository/index, /admin/...                 admin
    POST /v2/repository/models/{m}/load|unload            admin     m
    anything else (/v2, /docs, unknown paths)             metadata
"""

from __future__ import annotations

from typing import Any, NamedTuple

from server.admission.auth import HEALTH

_HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


class Route(NamedTuple):
    scope: str | None  # None: open without a token
    model: str | None
    inference: str | None = None  # "v2" or "tfserving": an inference POST, answered by the front ends
    version: str | None = None
    label: str | None = None


def route(method: str, path: str, protect_health: bool) -> Route:
    """What ``method path`` is, and what it needs."""
    if path in _HEALTH_PATHS:
        return Route(HEALTH if protect_health else None, None)
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "" and parts[2] == "models" and parts[1] in ("v1", "v2"):
        if parts[1] == "v2":
            if method != "POST" or parts[-1] != "infer":
                return Route("metadata", parts[3])
            if len(parts) == 5 and parts[3]:  # /v2/models/NAME/infer
                return Route("infer", parts[3], "v2")
            if len(parts) == 7 and parts[4] == "versions" and parts[3] and parts[5]:
                return Route("infer", parts[3], "v2", parts[5])
            return Route("infer", parts[3])
        if method != "POST" or not parts[-1].endswith(":predict"):
            return Route("metadata", parts[3])
        last = parts[-1][: -len(":predict")]
        if len(parts) == 4:  # /v1/models/NAME:predict: exactly the name the router takes
            return Route("infer", last, "tfserving" if last else None)
        if len(parts) == 6 and parts[3] and last and parts[4] in ("versions", "labels"):
            return Route("infer", parts[3], "tfserving", *((last, None) if parts[4] == "versions" else (None, last)))
        return Route("infer", parts[3])
    if path == "/metrics":
        return Route("metrics", None)
    if len(parts) >= 3 and parts[0] == "" and (parts[1] == "admin" or parts[1:3] == ["v2", "repository"]):
        return Route("admin", parts[4] if len(parts) >= 5 and parts[3] == "models" else None)
    return Route("metadata", None)


def visible(request_state: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The repository index rows a model-limited token may see (all rows without tokens, or for a token
    of every model): its admin scope must not reveal the names of models it may not use."""
    models = getattr(request_state, "token_models", None)
    return rows if models is None else [row for row in rows if row["name"] in models]
