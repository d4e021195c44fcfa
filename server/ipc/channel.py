"""Notices between a front end and the engine over a Unix socket: small tuples, length-prefixed frames.

Tensors never travel here (they are in an Arena); a notice names a slot and a
layout. Notices sent in one event-loop turn leave as one frame and one write.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("<I")
Notice = tuple[Any, ...]


class Channel(asyncio.Protocol):
    """One end of the socket. ``on_notice`` is called for every notice received, in order."""

    def __init__(self, on_notice: Callable[[Notice], None], on_lost: Callable[[], None] | None = None) -> None:
        self._on_notice = on_notice
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._outbox: list[Notice] = []
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self._on_lost is not None:
            self._on_lost()

    def send(self, notice: Notice) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(notice)

    def _flush(self) -> None:
        notices, self._outbox = self._outbox, []
        if self.transport is None or self.transport.is_closing():
            return
        payload = pickle.dumps(notices, protocol=pickle.HIGHEST_PROTOCOL)
        self.transport.write(_HEADER.pack(len(payload)) + payload)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= _HEADER.size:
            (length,) = _HEADER.unpack_from(buffer, start)
            end = start + _HEADER.size + length
            if len(buffer) < end:
                break
            for notice in pickle.loads(buffer[start + _HEADER.size : end]):
                self._on_notice(notice)
            start = end
        if start:
            del buffer[:start]

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()
