"""FastAPI routers, one per protocol or concern."""

from . import admin, health, kserve, tfserving

__all__ = ["admin", "health", "kserve", "tfserving"]
