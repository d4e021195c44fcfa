"""Which scope (and model) each HTTP route needs, and the refusal when the bearer token falls short.

One table for every route, checked before any handler runs: by the in-protocol inference
path (server/http/protocol.py) and by the ASGI entry (server/http/fastpath.py) for
everything else. A path that matches nothing still needs a token (``metadata``), so a
route added later is never open by accident. Without a tokens file nothing here runs.

Routes and what they need (scope, and the model checked)::

    GET  /v2/health/live, /v2/health/ready               open; any valid token with auth_health
    POST /v2/models/{m}[/versions/{v}]/infer              infer     m
    POST /v1/models/{m}[/versions/{v}|/labels/{l}]:predict infer    m
    GET  /v2/models/{m}..., /v1/models/{m}...             metadata  m
    GET  /metrics                                         metrics
    POST /v2/repository/index, /admin/...                 admin
    POST /v2/repository/models/{m}/load|unload            admin     m
    anything else (/v2, /docs, unknown paths)             metadata
"""

from __future__ import annotations

from typing import Any

from server.admission.auth import HEALTH, AuthError, TokenEntry, bearer
from server.admission.limits import RateLimited
from server.core.errors import classify, error_parts
from server.core.service import Reply

_HEALTH_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})


def requirement(method: str, path: str, protect_health: bool) -> tuple[str, str | None] | None:
    """(scope, model) that ``method path`` needs; None when the route is open without a token."""
    if path in _HEALTH_PATHS:
        return (HEALTH, None) if protect_health else None
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "" and parts[2] == "models" and parts[1] in ("v1", "v2"):
        model: str | None = parts[3]
        if parts[1] == "v1" and len(parts) == 4 and parts[3].endswith(":predict"):
            model = parts[3][: -len(":predict")]  # exactly the name the router takes from /v1/models/{name}:predict
        inference = parts[-1] == "infer" if parts[1] == "v2" else parts[-1].endswith(":predict")
        return ("infer" if method == "POST" and inference else "metadata"), model
    if path == "/metrics":
        return "metrics", None
    if len(parts) >= 3 and parts[0] == "" and (parts[1] == "admin" or parts[1:3] == ["v2", "repository"]):
        return "admin", (parts[4] if len(parts) >= 5 and parts[3] == "models" else None)
    return "metadata", None


def check(state: Any, method: str, path: str, authorization: str | bytes | None) -> Reply | None:
    """None when the request may go on; else the 401/403 reply, counted in batchserve_rejected_total.

    ``state`` is the app's state: ``auth`` (a TokenFile), ``settings``, ``metrics``, ``service``."""
    return admit(state, method, path, authorization)[0]


def admit(state: Any, method: str, path: str, authorization: str | bytes | None
          ) -> tuple[Reply | None, TokenEntry | None]:
    """:func:`check`'s answer, and the entry of the token that passed (None for an open route)."""
    need = requirement(method, path, state.settings.auth_health)
    if need is None:
        return None, None
    scope, model = need
    token = bearer(authorization)
    try:
        entry = state.auth.authorize(token, scope, model)
    except AuthError as error:
        return refusal(state, error, model, token is not None), None
    rate = state.rate
    if rate is not None and scope != HEALTH and not rate.allow(entry.digest):
        return refusal(state, RateLimited(f"this token has used its {rate.rate:g} requests a second "
                                          "(auth_rate_limit); retry shortly"), model), None
    return None, entry


def visible(request_state: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The repository index rows a model-limited token may see (all rows without tokens, or for a token
    of every model): its admin scope must not reveal the names of models it may not use."""
    models = getattr(request_state, "token_models", None)
    return rows if models is None else [row for row in rows if row["name"] in models]


def refusal(state: Any, error: AuthError | RateLimited, model: str | None, presented: bool = True) -> Reply:
    """The reply to a refused request (``presented``: it carried a token), counted by reason."""
    service = getattr(state, "service", None)
    if model is None:
        label = ""
    elif service is not None and model in service.repository.names():
        label = model
    else:
        label = "_unknown"  # never a name from the path: labels stay low-cardinality
    status, body, headers = error_parts(error)
    state.metrics.rejected.labels(label, "", classify(error).reason).inc()
    if status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="batchserve", error="invalid_token"' if presented
                   else 'Bearer realm="batchserve"'}
    return Reply(body, headers, status=status)
