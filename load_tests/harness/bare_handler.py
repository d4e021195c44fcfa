"""The floor under batchserve's front end: a bare ASGI handler on the same HTTP stack (uvicorn, httptools,
uvloop) that reads the whole body, views its tensor bytes as numbers and answers a small JSON.

No routing, validation, batching, model or metrics: what any Python server on this stack pays per request.
``batchserve bench`` runs it beside the server in the same run (``load_tests/harness/floor.py``).

    python -m load_tests.harness.bare_handler PORT
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

HEADER_LENGTH = b"inference-header-content-length"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Every request: the body joined, the bytes after the V2 JSON header viewed as float32 (uint8 when
    their length is no multiple of 4), one value read, a small JSON answer."""
    if scope["type"] != "http":  # lifespan and the like: nothing to set up
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    offset = next((int(value) for name, value in scope["headers"] if name == HEADER_LENGTH), 0)
    size = len(body) - offset
    tensor = np.frombuffer(body, np.float32 if size % 4 == 0 else np.uint8, offset=offset)
    answer = b'{"outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[%.4f]}]}' % (
        float(tensor[0]) if tensor.size else 0.0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
    await send({"type": "http.response.body", "body": answer})


def serve(port: int) -> None:
    """Serve ``app`` on 127.0.0.1:``port`` with batchserve's HTTP stack, until killed."""
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
                log_level="warning", access_log=False, backlog=4096)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
