"""The HTTP front end: the in-protocol fast path, the ASGI entry and the FastAPI routers."""

from server.http import admin, health, kserve, repository_api, tfserving

__all__ = ["admin", "health", "kserve", "repository_api", "tfserving"]
