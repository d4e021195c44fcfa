"""A worker's side of outliving its engine: it listens for the next engine and waits for one.

A thread accepts each connection and, once the model has loaded, answers it at once with ``Ready`` (the model's
description and the warm-up it ran), even while the worker still finishes a batch for the engine before: so
the new engine is ready at once and its first batch simply waits for that one. The worker's main thread takes
the newest connection once its current one has closed. It exits when no engine adopts it within
``orphan_timeout_s``, or at once when the supervisor that started its engine is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from server.runtime.worker_messages import Ready

log = logging.getLogger(__name__)


class Adoption:
    """The worker's listening socket (bound at once, so a new engine finds it even while the model loads)."""

    def __init__(self, listen: str, supervisor: int | None, orphan_timeout_s: float) -> None:
        self.path = f"{listen}.{os.getpid()}.sock"
        self.supervisor = supervisor
        self.orphan_timeout_s = orphan_timeout_s
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(8)
        self._engines: queue.Queue[Connection] = queue.Queue()

    def start(self, ready: Callable[[], Ready]) -> None:
        """Answer engines from now on with ``ready()`` (call once the model has loaded)."""
        threading.Thread(target=self._accept, args=(ready,), name="adoption", daemon=True).start()

    def _accept(self, ready: Callable[[], Ready]) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # closed: the worker is exiting
                return
            conn = Connection(sock.detach())
            try:
                conn.send(ready())
            except OSError:  # that engine is gone already
                conn.close()
                continue
            self._engines.put(conn)

    def next_engine(self) -> Connection | None:
        """The newest engine that connected, once one has; None when none did in time or the supervisor is gone."""
        deadline = time.monotonic() + self.orphan_timeout_s
        while time.monotonic() < deadline and self._supervisor_alive():
            try:
                conn = self._engines.get(timeout=1.0)
            except queue.Empty:
                continue
            while True:  # older ones are engines gone since
                try:
                    newer = self._engines.get_nowait()
                except queue.Empty:
                    return conn
                conn.close()
                conn = newer
        return None

    def _supervisor_alive(self) -> bool:
        if self.supervisor is None:
            return True
        try:
            os.kill(self.supervisor, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, under another user (only if its pid was reused)
            return True
        return True

    def close(self) -> None:
        """Stop listening and remove the socket."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
