"""uvicorn's internals, in one place: what the in-place inference protocol relies on.

server/http/protocol.py subclasses uvicorn's ``HttpToolsProtocol`` (undocumented: uvicorn's API is its
``Config`` and ``Server``) and reads and writes its per-connection and per-request state. That state is named
here, so a reader sees the whole list, and tests/unit/test_uvicorn_seam.py verifies it against the
installed uvicorn, naming each name that moved:

- ``HttpToolsProtocol`` and ``STATUS_LINE`` (status code -> ``b"HTTP/1.1 200 OK\\r\\n"``), imported from
  ``uvicorn.protocols.http.httptools_impl``;
- ``METHODS``: the methods the subclass extends (calling ``super()``) or calls, with their positional
  arguments; uvicorn answers a parser error, one raised by a parser callback included, with
  ``send_400_response``;
- ``STATE``: the instance attributes it reads or writes, and ``NESTED``: what it uses of some of them
  (``flow``, ``parser``, ``server_state``). ``headers`` holds (lower-cased name, value) pairs,
  ``url`` the request target's bytes, both complete when ``on_headers_complete`` runs;
- ``CYCLE``: the attributes uvicorn's own methods read or write of ``self.cycle``, which the subclass sets to
  its own cycles (its ``_Cycle`` has them). ``CYCLE_INTERCEPTED``: the methods whose override never hands one
  of its cycles to uvicorn's.

The subclass uses these as plain attributes of ``self`` (no accessor on the request path); the unit test
also reads protocol.py and fails when it uses a name of uvicorn's that this module does not list.
pyproject.toml bounds uvicorn below its next major version.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["CYCLE", "CYCLE_INTERCEPTED", "METHODS", "NESTED", "STATE", "STATUS_LINE", "HttpToolsProtocol"]

METHODS = {
    # parser callbacks (httptools calls them while data_received feeds the parser)
    "on_message_begin": 0, "on_headers_complete": 0, "on_body": 1, "on_message_complete": 0,
    # asyncio.Protocol callbacks, as uvicorn implements them
    "data_received": 1, "connection_lost": 1, "resume_writing": 0,
    # uvicorn's own
    "send_400_response": 1,  # extended: a 431 for headers over the limits
    "on_response_complete": 0,  # called once an answer is written while requests are pipelined behind it
    "timeout_keep_alive_handler": 0,  # called when a connection answered in place has been idle long enough
    "_unset_keepalive_if_required": 0,  # called when a request begins: the connection is not idle
    "shutdown": 0,  # extended: graceful shutdown answers a request in flight, then closes
}
STATE = ("cycle", "headers", "url", "expect_100_continue", "parser", "transport", "flow", "server_state", "scope",
         "pipeline", "loop", "timeout_keep_alive",
         "timeout_keep_alive_task")  # read first: _unset_keepalive_if_required is called only when one is armed
NESTED = {
    "flow": ("write_paused", "pause_reading", "resume_reading"),  # uvicorn's FlowControl
    "parser": ("get_method", "should_upgrade", "should_keep_alive"),  # httptools.HttpRequestParser
    "server_state": ("default_headers", "total_requests"),  # [(name, value)] bytes (Server, Date); answers counted
}
CYCLE = ("disconnected", "keep_alive", "message_event", "response_complete")
CYCLE_INTERCEPTED = ("on_body", "on_message_complete")
