"""Open-loop sending at given times, lean enough that the generator is not what saturates.

A task, a future and a sleep per request cost the generator ~40 us of CPU: at 20,000+
requests/s it fell behind its own schedule and its late reads of answers looked like
server latency. Here one loop wakes per tick, writes every request now due on an idle
keep-alive connection (a request due when none is idle waits for the first connection to
free up, or for a new one), and each connection's ``data_received`` records its answer:
no task, future or sleep per request. Latency counts from the scheduled time; ``lag``
is how late each request was written.
"""

from __future__ import annotations

import asyncio
import collections
import time

import numpy as np

from .generator import complete_response


class _Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (``index``)."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.index = -1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.run.free(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(self)

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            self.buffer += data
            data = bytes(self.buffer)
        answer = complete_response(data) if self.index >= 0 else None
        if answer is None:
            self.buffer[:] = data
            return
        status, total = answer
        self.buffer[:] = data[total:]
        index, self.index = self.index, -1
        self.run.answered(index, status)
        self.run.free(self)


class _Run:
    """The schedule, the per-request results and the idle connections."""

    def __init__(self, payload: bytes, scheduled: np.ndarray, max_connections: int) -> None:
        self.payload = payload
        self.scheduled: list[float] = scheduled.tolist()  # perf_counter times (lists: numpy scalars are slow)
        self.latency = [float("inf")] * len(scheduled)
        self.status = [0] * len(scheduled)
        self.lag = [float("inf")] * len(scheduled)  # never sent: as late as can be
        self.idle: list[_Connection] = []
        self.due: collections.deque[int] = collections.deque()  # due, waiting for a connection
        self.connections = 0
        self.connecting = 0
        self.max_connections = max_connections
        self.pending = len(scheduled)
        self.opening: set[asyncio.Task[None]] = set()
        self.refused = 0  # connections the server refused
        self.finished = asyncio.get_running_loop().create_future()

    def send(self, conn: _Connection, index: int) -> None:
        assert conn.transport is not None
        conn.index = index
        self.lag[index] = time.perf_counter() - self.scheduled[index]
        conn.transport.write(self.payload)

    def free(self, conn: _Connection) -> None:
        if self.due:
            self.send(conn, self.due.popleft())
        else:
            self.idle.append(conn)

    def answered(self, index: int, status: int) -> None:
        self.latency[index] = time.perf_counter() - self.scheduled[index]
        self.status[index] = status
        self.pending -= 1
        if self.pending == 0 and not self.finished.done():
            self.finished.set_result(None)

    def lost(self, conn: _Connection) -> None:
        self.connections -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.index >= 0:
            self.answered(conn.index, 0)  # closed with its request unanswered: status 0
        if self.due:
            self._connect()

    def dispatch(self, index: int) -> None:
        if self.idle:
            self.send(self.idle.pop(), index)
            return
        self.due.append(index)
        self._connect()

    def _connect(self) -> None:
        """One more connection, while under the limit and fewer are opening than requests wait."""
        if self.connections + self.connecting < self.max_connections and self.connecting < len(self.due):
            self.connecting += 1
            task = asyncio.get_running_loop().create_task(self._open())
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)

    async def _open(self) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: _Connection(self), self.host, self.port)
            self.connections += 1
        except OSError:
            self.refused += 1  # the requests wait for another connection to free up
        finally:
            self.connecting -= 1

    host = "127.0.0.1"
    port = 80


async def drive(host: str, port: int, payload: bytes, offsets: np.ndarray, max_connections: int,
                initial_connections: int = 64, linger: float = 30.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Send ``payload`` at ``offsets`` (seconds from now); per request: latency from its scheduled
    time (inf: unanswered ``linger`` seconds after the last send), status (0: none, or the connection
    closed before the answer), send lag (inf: never sent)."""
    loop = asyncio.get_running_loop()
    start = time.perf_counter() + 0.05 + 0.001 * initial_connections
    run = _Run(payload, start + offsets, max_connections)
    run.host, run.port = host, port
    for _ in range(min(initial_connections, max_connections)):
        await loop.create_connection(lambda: _Connection(run), host, port)
        run.connections += 1
    index, count, scheduled = 0, len(offsets), run.scheduled
    while index < count:
        now = time.perf_counter()
        while index < count and scheduled[index] <= now:
            run.dispatch(index)
            index += 1
        if index < count:
            await asyncio.sleep(max(0.0, scheduled[index] - time.perf_counter()))
    if run.pending:
        try:
            await asyncio.wait_for(asyncio.shield(run.finished), linger)
        except TimeoutError:
            pass
    for conn in list(run.idle):
        if conn.transport is not None:
            conn.transport.close()
    return np.array(run.latency), np.array(run.status, dtype=np.int32), np.array(run.lag)
