"""The HTTP front end: the in-protocol fast path, the ASGI entry and the FastAPI routers."""
