"""Messages between two processes over a Unix socket: tuples, pickled, in length-prefixed frames.

A message travels as the plain tuple of its fields, which pickles several times faster than a class
instance, and the receiver gets that plain tuple (``server.multiprocess.messages`` turns it back into its
class). Messages sent in one event-loop turn leave as one frame and one write.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("<I")
Message = tuple[Any, ...]


class Channel(asyncio.Protocol):
    """One end of the socket. ``on_message`` is called with every message received, in order, and
    ``on_lost`` once when the connection is gone (the peer closed it, died, or broke the framing)."""

    def __init__(self, on_message: Callable[[Message], None], on_lost: Callable[[], None] | None = None) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._outbox: list[Message] = []
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

    def send(self, message: Message) -> None:
        """Queue ``message``; it leaves with the others of this event-loop turn (dropped if the
        connection is gone by then)."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if self.transport is None or self.transport.is_closing():
            return
        payload = pickle.dumps([*map(tuple, messages)], protocol=pickle.HIGHEST_PROTOCOL)
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
            for message in pickle.loads(buffer[start + _HEADER.size : end]):
                self._on_message(message)
            start = end
        if start:
            del buffer[:start]

    def close(self) -> None:
        if self.transport is not None:
            self._flush()
            self.transport.close()
