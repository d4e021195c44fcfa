"""HTTP/1.1 requests written and answers read on raw sockets: for tests that control exactly when
bytes reach the server (a stalled front end, a burst on open keep-alive connections)."""

from __future__ import annotations

import json
import socket

from .observe import row_body


def request_bytes(model: str, value: float) -> bytes:
    """A V2 infer request of one row (``value`` in each feature) for ``model``, as bytes."""
    body = json.dumps(row_body(value)).encode()
    return (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """The next whole answer on ``sock``: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    assert len(rest) == length, "nothing may follow the answer"
    return int(lines[0].split()[1]), headers, rest
