"""uvicorn's httptools protocol with the inference routes answered in place, without ASGI.

For an inference POST with a Content-Length within the limit, the body's chunks
are kept as they arrive and joined once; the handler's reply goes out as one
write of precomputed header bytes and the body. No ASGI scope, receive/send
messages, Starlette Request or Response is built. Everything else (other routes,
chunked or oversized bodies, pipelined requests, upgrades) takes uvicorn's own
path to FastAPI, and uvicorn keeps keep-alive, flow control and graceful
shutdown. A client that disconnects cancels its request, which leaves the queue.

The subclass reads and writes uvicorn's undocumented protocol state (``self.cycle``,
``self.headers``, ``self.flow``, ...): server/http/uvicorn_seam.py lists every such name,
and its unit test checks them against the installed uvicorn and this file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools

from server.admission.limits import InflightBytes, InflightFull
from server.admission.overload import FLOOR, LoopLag
from server.admission.routes import check
from server.codecs.v2 import HEADER_LENGTH
from server.core.service import InferenceService, Reply, error_reply
from server.http.fastpath import Route, match
from server.http.uvicorn_seam import STATUS_LINE, HttpToolsProtocol

_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
_CONTENT_TYPES = {t: f"content-type: {t}\r\n".encode() for t in ("application/json", "application/octet-stream")}


class _Cycle:
    """One inference request on a connection: the attributes uvicorn's protocol reads of a cycle, and ours."""

    __slots__ = ("chunks", "discard", "disconnected", "header", "keep_alive", "message_event", "reserved",
                 "response_complete", "route", "task")

    def __init__(self, route: Route | _Refusal, header: str | None, keep_alive: bool) -> None:
        self.route = route
        self.header = header
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.response_complete = False
        self.disconnected = False
        self.message_event = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.reserved = 0  # body bytes counted in the front end's bytes in flight
        self.discard = False  # refused before its body: the body is read and dropped, not kept


class InferenceHttpProtocol(HttpToolsProtocol):
    """Set ``service_of`` (how to reach the InferenceService) with :func:`protocol_for`."""

    service_of: Any = None
    guard_state: Any = None  # the app's state, for the token check
    guarded = False  # a tokens file is set: every inference request shows a token first
    inflight: InflightBytes | None = None  # max_inflight_bytes: request bytes this process holds
    loop_lag: LoopLag | None = None  # how far behind this process's loop runs (overload_share)
    max_header_count = 0  # 0: no limits on headers (protocol_for sets the settings')
    max_header_bytes = 0
    _header_bytes = 0  # parsed: names and values of this request's headers
    _wire_bytes = 0  # received while this request's headers are unfinished
    _headers_pending = False
    _headers_refused = False

    def on_message_begin(self) -> None:
        self._unset_keepalive_if_required()  # a pipelined request after one answered in place: not idle
        super().on_message_begin()
        self._header_bytes = self._wire_bytes = 0
        self._headers_pending = True

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_bytes += len(name) + len(value) + 4
        if self.max_header_count and (len(self.headers) > self.max_header_count
                                      or self._header_bytes + len(self.url) > self.max_header_bytes):
            self._headers_refused = True
            raise _HeadersTooLarge  # the parser stops; uvicorn answers with send_400_response, sent as 431

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._headers_pending and self.max_header_bytes and not self._headers_refused:
            self._wire_bytes += len(data)  # an unfinished header line counts as it arrives (one read of slack)
            if self._wire_bytes > self.max_header_bytes + 65536:
                self._headers_refused = True
                self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        if not self._headers_refused:
            super().send_400_response(msg)
            return
        body = (b'{"error":"request headers exceed the limits: at most %d headers and %d bytes of request line '
                b'and headers"}' % (self.max_header_count, self.max_header_bytes))
        self.transport.write(b"".join([
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n",
            b"connection: close\r\ncontent-length: ", str(len(body)).encode(), b"\r\n\r\n", body]))
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._headers_pending = False
        previous = self.cycle
        if (self.parser.get_method() == b"POST" and (previous is None or previous.response_complete)
                and not self.parser.should_upgrade() and not self.expect_100_continue):
            route = self._route()
            if route is not None:
                header = next((v.decode("latin-1") for k, v in self.headers if k == _HEADER_LENGTH), None)
                self.cycle = cycle = _Cycle(route, header, self.parser.should_keep_alive())  # type: ignore[assignment]
                if isinstance(route, _Refusal):
                    cycle.discard = True  # refused by the token check: its body is never kept
                elif self.inflight is not None:
                    self._reserve(cycle)
                return
        super().on_headers_complete()

    def _route(self) -> Route | _Refusal | None:
        path = httptools.parse_url(self.url).path
        if b"%" in path:
            return None
        text = path.decode("ascii")
        route = match(text)
        if route is None:
            return None
        service: InferenceService | None = self.service_of()
        if service is None:
            return None
        length = next((v for k, v in self.headers if k == b"content-length"), None)
        if length is None or not length.isdigit() or int(length) > service.settings.max_body_bytes:
            return None  # chunked or too large: FastAPI's path reads (or refuses) it
        if self.guarded:
            authorization = next((v for k, v in self.headers if k == b"authorization"), None)
            refused = check(self.guard_state, "POST", text, authorization)
            if refused is not None:
                return _Refusal(refused)
        lag = self.loop_lag.behind() if self.loop_lag is not None else 0.0
        if lag > FLOOR or service.limiting:  # refused now, if too far behind or over its admitted rate
            overloaded = service.overloaded(route.protocol, route.model, route.version, route.label, lag)
            if overloaded is not None:
                return _Refusal(overloaded.reply)
        return route

    def _reserve(self, cycle: _Cycle) -> None:
        """Count the body in the bytes in flight, or answer 503 without keeping it."""
        assert self.inflight is not None
        size = int(next(v for k, v in self.headers if k == b"content-length"))
        if self.inflight.reserve(size):
            cycle.reserved = size
            return
        self.guard_state.metrics.rejected.labels("", "", "inflight_full").inc()
        cycle.discard = True
        cycle.route = _Refusal(error_reply(InflightFull(
            f"this front end holds {self.inflight.used >> 20} MiB of request bodies "
            f"(max_inflight_bytes={self.inflight.limit}); retry shortly")))

    def _release(self, cycle: _Cycle) -> None:
        if cycle.reserved and self.inflight is not None:
            self.inflight.release(cycle.reserved)
            cycle.reserved = 0

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if isinstance(cycle, _Cycle):
            if not cycle.discard:
                cycle.chunks.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        cycle = self.cycle
        if isinstance(cycle, _Cycle):
            if isinstance(cycle.route, _Refusal):  # answered in place: no task, nothing awaited
                cycle.response_complete = True
                self._release(cycle)
                self._send(cycle, cycle.route.reply)
                return
            cycle.task = task = self.loop.create_task(self._answer(cycle))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            return
        super().on_message_complete()

    async def _answer(self, cycle: _Cycle) -> None:
        chunks = cycle.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)

        async def read() -> bytes:
            return body

        try:
            reply = await cycle.route(self.service_of(), read, cycle.header)
        finally:
            cycle.response_complete = True
            self._release(cycle)
        self._send(cycle, reply)

    def _send(self, cycle: _Cycle, reply: Reply) -> None:
        """Write a finished cycle's answer; the connection then takes its next request, unless its
        client sends without reading the answers (then reading waits for the writes to drain)."""
        if not self.transport.is_closing():
            self.transport.write(self._head(reply, cycle.keep_alive) + reply.body)
            if not cycle.keep_alive:
                self.transport.close()
        self.on_response_complete()
        if self.flow.write_paused:
            self.flow.pause_reading()

    def _head(self, reply: Reply, keep_alive: bool) -> bytes:
        parts = [STATUS_LINE[reply.status]]
        for name, value in self.server_state.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        parts.append(_CONTENT_TYPES.get(reply.media_type) or f"content-type: {reply.media_type}\r\n".encode())
        for key, text in (reply.headers or {}).items():
            parts.append(f"{key}: {text}\r\n".encode("latin-1"))
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += [b"content-length: ", str(len(reply.body)).encode(), b"\r\n\r\n"]
        return b"".join(parts)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.cycle is None or self.cycle.response_complete:  # paused by _send, for answers it had not read
            self.flow.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        if isinstance(cycle, _Cycle) and cycle.task is not None and not cycle.response_complete:
            cycle.task.cancel()  # the client left: its request leaves the queue
        if isinstance(cycle, _Cycle):
            self._release(cycle)  # also when its task never started
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if isinstance(self.cycle, _Cycle) and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answer it, then close
            return
        super().shutdown()


class _HeadersTooLarge(Exception):
    """Raised inside the parser's header callback: more headers, or header bytes, than allowed."""


class _Refusal:
    """A route that answers ``reply`` once the body has arrived (the connection stays usable); the
    body itself is dropped as it comes, never kept or counted in flight."""

    __slots__ = ("reply",)

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    async def __call__(self, service: InferenceService, read: Any, header: str | None) -> Reply:
        return self.reply


def protocol_for(app: Any) -> type[InferenceHttpProtocol]:
    """The protocol class for uvicorn's ``http=``, bound to ``app`` (its ``state.service`` once started)."""

    def service_of() -> InferenceService | None:
        return getattr(app.state, "service", None)

    settings = app.state.settings
    return type("BatchserveHttpProtocol", (InferenceHttpProtocol,), {
        "service_of": staticmethod(service_of), "guard_state": app.state,
        "guarded": getattr(app.state, "auth", None) is not None,
        "inflight": app.state.inflight,  # shared with the ASGI path: one count per process
        "loop_lag": app.state.loop_lag,
        "max_header_count": settings.max_header_count, "max_header_bytes": settings.max_header_bytes})
