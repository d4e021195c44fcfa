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
from functools import partial
from typing import Any

import httptools

from server.admission.auth import bearer
from server.admission.pipeline import Admission
from server.admission.routes import Route, route
from server.codecs.v2 import HEADER_LENGTH
from server.core.request import InferRequest
from server.core.service import Pending, Refusal, Reply, error_reply
from server.http.fastpath import inference_request
from server.http.uvicorn_seam import STATUS_LINE, HttpToolsProtocol
from server.observability.access_log import tagged

_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
_CONTENT_TYPES = {t: f"content-type: {t}\r\n".encode() for t in ("application/json", "application/octet-stream")}
_ROUTES_KEPT = 1024  # inference paths whose route is remembered (a client can send endless distinct ones)
_HEADERS_KEPT = 1024  # distinct sets of an answer's own headers kept as bytes
_EXTRA_HEADERS: dict[tuple[tuple[str, str], ...], bytes] = {}


class _NoEvent:
    """What uvicorn's protocol sets on a cycle when the connection goes; ours never waits on it (an
    asyncio.Event per request cost more than the rest of the cycle's setup)."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()
_UNSEEN: Any = object()


class _Cycle:
    """One inference request on a connection: the attributes uvicorn's protocol reads of a cycle, and ours."""

    __slots__ = ("chunks", "discard", "disconnected", "header", "keep_alive", "message_event", "pending",
                 "request", "reserved", "response_complete")

    def __init__(self, request: InferRequest | Refusal, header: str | None, keep_alive: bool) -> None:
        self.request = request
        self.header = header
        self.keep_alive = keep_alive
        self.chunks: list[bytes] = []
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NO_EVENT
        self.pending: Pending | None = None  # started: the service answers it
        self.reserved = 0  # body bytes counted in the front end's bytes in flight
        self.discard = False  # refused before its body: the body is read and dropped, not kept


class InferenceHttpProtocol(HttpToolsProtocol):
    """Set ``admission`` (the app's admission pipeline, used once its service is up) with :func:`protocol_for`."""

    admission: Admission | None = None
    inflight = False  # max_inflight_bytes is set: an admitted body is reserved in flight until answered
    max_header_count = 0  # 0: no limits on headers (protocol_for sets the settings')
    max_header_bytes = 0
    _wire_bytes = 0  # received while this request's headers are unfinished
    _received = 0  # bytes of the read being parsed
    _idle_since: float | None = None  # the loop's time of the last answer written here, while no data came since
    _idle_timer: asyncio.TimerHandle | None = None  # the keep-alive check of answers written here
    _headers_pending = False
    _headers_refused = False
    _routes: dict[bytes, Route | None] = {}  # url -> its inference route (None: not one), per protocol class
    _heads: tuple[object, dict[tuple[int, str, bool], bytes]] = (None, {})  # default headers, their heads

    def on_message_begin(self) -> None:
        """uvicorn's, without its ASGI scope: only a request that takes uvicorn's path needs one, and it is
        built then (``_scope``)."""
        if self.timeout_keep_alive_task is not None:  # a pipelined request after one answered in place: not idle
            self._unset_keepalive_if_required()
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._wire_bytes = 0
        self._headers_pending = True

    def _scope(self) -> None:
        """uvicorn's scope for this request, as its ``on_message_begin`` makes it, over the URL and headers read."""
        url, headers, expect_100_continue = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()
        self.url, self.headers, self.expect_100_continue = url, headers, expect_100_continue
        self.scope["headers"] = headers

    def data_received(self, data: bytes) -> None:
        self._idle_since = None  # not idle: a connection that sends is not closed for keep-alive (as uvicorn's)
        self._received = len(data)  # at least the header bytes that this read completes
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
        headers, limit = self.headers, self.max_header_bytes
        if self.max_header_count and (len(headers) > self.max_header_count or (
                self._wire_bytes + self._received > limit  # else they fit: the reads holding them were smaller
                and len(self.url) + sum(len(name) + len(value) + 4 for name, value in headers) > limit)):
            self._headers_refused = True
            raise _HeadersTooLarge  # the parser stops; uvicorn answers with send_400_response, sent as 431
        previous = self.cycle
        if (self.parser.get_method() == b"POST" and (previous is None or previous.response_complete)
                and not self.parser.should_upgrade() and not self.expect_100_continue):
            admission = self.admission
            found = None
            if admission is not None and admission.serving():
                found = self._routes.get(self.url, _UNSEEN)  # remembered per path (a call fewer a request)
                if found is _UNSEEN:
                    found = self._inference_route(admission)
            if found is not None:
                length = header = authorization = None
                for name, value in self.headers:
                    if name == b"content-length":
                        length = value
                    elif name == _HEADER_LENGTH:
                        header = value.decode("latin-1")
                    elif name == b"authorization":
                        authorization = value
                assert admission is not None
                size = int(length) if length is not None and length.isdigit() else -1
                if 0 <= size <= admission.settings.max_body_bytes:
                    token = bearer(authorization) if admission.tokens is not None else None
                    request = inference_request(found, self.headers)
                    request.headers = self.headers  # read only for a log line
                    admitted = admission.admit(request, token, size) or request
                    self.cycle = cycle = _Cycle(admitted, header, self.parser.should_keep_alive())  # type: ignore[assignment]
                    if isinstance(admitted, Refusal):
                        cycle.discard = True  # refused: its body is read and dropped, never kept
                    elif self.inflight:
                        cycle.reserved = size
                    return
                # chunked or too large: the ASGI path reads (or refuses) it
        self._scope()
        super().on_headers_complete()

    def _inference_route(self, admission: Admission) -> Route | None:
        """The inference route of this POST's path (not seen before), which this protocol answers; None for
        uvicorn's own path (not inference, or escaped). Remembered per path: clients send the same few again
        and again."""
        url = self.url
        routes = self._routes
        path = httptools.parse_url(url).path
        found: Route | None = None
        if b"%" not in path:
            found = route("POST", path.decode("ascii"), admission.settings.auth_health)
            if found.inference is None:
                found = None
        if len(routes) >= _ROUTES_KEPT:
            routes.clear()
        routes[url] = found
        return found

    def _release(self, cycle: _Cycle) -> None:
        if cycle.reserved:
            assert self.admission is not None
            self.admission.release(cycle.reserved)
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
            if isinstance(cycle.request, Refusal):  # answered in place: no task, nothing awaited
                cycle.response_complete = True
                self._send(cycle, cycle.request.reply)
                return
            chunks = cycle.chunks
            request = cycle.request
            request.payload = (chunks[0] if len(chunks) == 1 else b"".join(chunks), cycle.header)
            assert self.admission is not None
            cycle.pending = self.admission.service.start(request, partial(self._answered, cycle))
            return
        super().on_message_complete()

    def _answered(self, cycle: _Cycle, reply: Reply | None, error: BaseException | None) -> None:
        """The service's answer (counted there): written, unless the client left."""
        cycle.pending = None  # it refers to this callback: no cycle left for the collector
        if cycle.disconnected:
            return  # cancelled: its client left
        cycle.response_complete = True
        self._release(cycle)
        if reply is None:
            assert error is not None
            reply = error_reply(error)
        request = cycle.request
        assert isinstance(request, InferRequest)
        if request.request_id is not None:  # logged: the answer names it
            reply = tagged(reply, request.request_id)
        self._send(cycle, reply)

    def _send(self, cycle: _Cycle, reply: Reply) -> None:
        """Write a finished cycle's answer; the connection then takes its next request, unless its
        client sends without reading the answers (then reading waits for the writes to drain)."""
        if not self.transport.is_closing():
            self.transport.write(self._head(reply, cycle.keep_alive) + reply.body)
            if not cycle.keep_alive:
                self.transport.close()
        self._response_complete()
        if self.flow.write_paused:
            self.flow.pause_reading()

    def _response_complete(self) -> None:
        """uvicorn's ``on_response_complete`` for an answer written here, with its keep-alive timer armed once
        per idle period instead of once per answer (and cancelled by the next request): one timer checks, when
        due, whether the connection has been idle that long, and is armed again for the rest if not."""
        if self.pipeline:  # uvicorn starts the next request, which it answers itself
            self.on_response_complete()
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.timeout_keep_alive_task is not None:  # a timer uvicorn armed after an answer of its own
            self._unset_keepalive_if_required()
        self.flow.resume_reading()
        self._idle_since = now = self.loop.time()
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(now + self.timeout_keep_alive, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        since = self._idle_since
        if since is None or self.transport.is_closing():  # a request came since: its answer arms it again
            return
        due = since + self.timeout_keep_alive
        if self.loop.time() >= due:
            self.timeout_keep_alive_handler()
        else:  # answered again since it was armed
            self._idle_timer = self.loop.call_at(due, self._idle_check)

    def _head(self, reply: Reply, keep_alive: bool) -> bytes:
        """The status line and headers: the fixed part made once per status, media type and keep-alive
        while uvicorn's default headers (server, date: renewed each second) stay the same."""
        defaults = self.server_state.default_headers
        kept, heads = self._heads
        if kept is not defaults:
            heads = {}
            type(self)._heads = (defaults, heads)
        key = (reply.status, reply.media_type, keep_alive)
        fixed = heads.get(key)
        if fixed is None:
            parts = [STATUS_LINE[reply.status]]
            for name, value in defaults:
                parts += [name, b": ", value, b"\r\n"]
            parts.append(_CONTENT_TYPES.get(reply.media_type) or f"content-type: {reply.media_type}\r\n".encode())
            if not keep_alive:
                parts.append(b"connection: close\r\n")
            fixed = heads[key] = b"".join(parts)
        extra = b""
        if reply.headers:  # a few distinct ones (the V2 header's length, Retry-After): each made once
            pairs = tuple(reply.headers.items())
            extra = _EXTRA_HEADERS.get(pairs, b"")
            if not extra:
                extra = b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in pairs)
                if len(_EXTRA_HEADERS) >= _HEADERS_KEPT:
                    _EXTRA_HEADERS.clear()
                _EXTRA_HEADERS[pairs] = extra
        return b"%s%scontent-length: %d\r\n\r\n" % (fixed, extra, len(reply.body))

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.cycle is None or self.cycle.response_complete:  # paused by _send, for answers it had not read
            self.flow.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        cycle = self.cycle
        if isinstance(cycle, _Cycle):
            if cycle.pending is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.pending.cancel()  # the client left: its request leaves the queue, never answered
                cycle.pending = None
            self._release(cycle)  # also when it never started
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if isinstance(self.cycle, _Cycle) and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # answer it, then close
            return
        super().shutdown()


class _HeadersTooLarge(Exception):
    """Raised inside the parser's headers-complete callback: more headers, or header bytes, than allowed
    (a request whose header lines never end is stopped by ``data_received`` instead)."""


def protocol_for(app: Any) -> type[InferenceHttpProtocol]:
    """The protocol class for uvicorn's ``http=``, bound to ``app`` (its admission pipeline, used once
    ``state.service`` exists: before, uvicorn's own path answers)."""
    settings = app.state.settings
    return type("BatchserveHttpProtocol", (InferenceHttpProtocol,), {
        "admission": Admission(app.state),  # one count of bytes in flight per process, shared with the ASGI path
        "inflight": app.state.inflight is not None,
        "max_header_count": settings.max_header_count, "max_header_bytes": settings.max_header_bytes,
        "_routes": {}, "_heads": (None, {})})
