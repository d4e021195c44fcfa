"""FastAPI routers, one per protocol or concern."""

from . import admin, health, kserve, repository_api, tfserving

__all__ = ["admin", "health", "kserve", "repository_api", "tfserving"]
