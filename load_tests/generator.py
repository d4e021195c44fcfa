"""The load generator: lean HTTP/1.1 over keep-alive connections, pre-encoded requests, uvloop.

Closed loop: N connections, each sends its next request when the last answer arrives;
latency counts from the send. Open loop: requests at given times (Poisson or on/off-bursty
arrivals at a mean rate); latency counts from each request's *scheduled* time, so a server
that falls behind cannot hide its queueing (closed-loop tools, locust included, understate
latency under overload), and ``lag`` is how late the generator itself wrote each request.

One loop wakes per tick (at the next send time, ``--tick`` apart at least) and writes every
request now due on an idle connection (one due when none is idle waits for the first to free
up, or for a new one, up to ``--max-connections``); each connection's ``data_received`` records
its answer and sends the next: no task, future or sleep per request. (A task, a future and a
sleep per request cost ~40 us of CPU: at 20,000+ requests/s such a generator fell behind its
own schedule and its late reads looked like server latency.) uvloop's timers count whole
milliseconds: with the default tick (1 ms) requests are written up to ~1 ms late (``lag``) and the
generator sleeps in between; with ``--tick 0`` each is written on time, and the loop spins through
the sub-millisecond waits, a core's CPU, taken from the server where they share cores. Status 0:
no answer (the connection closed, or none came ``linger`` seconds after the last send).

    python -m load_tests.generator --url http://127.0.0.1:8000/v2/models/m/infer --payload req.bin \
        --mode open --rate 500 --duration 5 [--process bursty] [--slo 0.25]

The payload file holds the full request (request line, headers, body) as sent.
Prints one JSON object: requests, errors by status, latencies, generator CPU; with
``--slo``, goodput (200s within the SLO), refusals, expiries and send lag instead.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

PROCESSES = ("poisson", "bursty")
BURST_PERIOD, BURST_ON = 0.5, 0.4  # on/off: 40 % of each half second at 2.5x the mean rate
TICK = 0.001  # open loop: the shortest sleep by default; uvloop's timers count whole ms, a shorter one spins


def arrival_offsets(process: str, rate: float, total: float, seed: int) -> np.ndarray:
    """Send times (seconds from the start) of a Poisson or on/off-bursty process with mean ``rate``."""
    rng = np.random.default_rng(seed)
    peak = rate if process == "poisson" else rate / BURST_ON
    offsets = np.cumsum(rng.exponential(1.0 / peak, size=int(peak * total * 1.3) + 20))
    offsets = offsets[offsets < total]
    if process == "bursty":
        offsets = offsets[(offsets % BURST_PERIOD) < BURST_ON * BURST_PERIOD]
    return offsets


def complete_response(data: bytes | bytearray) -> tuple[int, int] | None:
    """(status, length) of the HTTP/1.1 response at the start of ``data``, or None while it is incomplete."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(data[:end]).lower()
    start, length = head.find(b"\r\ncontent-length:"), 0
    if start >= 0:
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop > 0 else None])
    total = end + 4 + length
    if len(data) < total:
        return None
    try:
        return int(head[9:12]), total
    except ValueError:
        raise RuntimeError(f"bad response head: {bytes(data[:200])!r}") from None


def build_request(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> bytes:
    """The raw bytes of one POST, encoded once and sent many times."""
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


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
    """The requests (scheduled in advance, or one more per answer in a closed loop), their results
    and the idle connections."""

    def __init__(self, host: str, port: int, payload: bytes, max_connections: int,
                 scheduled: list[float] | None = None) -> None:
        self.host, self.port, self.payload = host, port, payload
        self.closed = scheduled is None  # closed loop: a free connection sends again until ``until``
        self.until = -math.inf  # closed loop: nothing is sent before the start
        self.scheduled: list[float] = scheduled or []  # perf_counter times (lists: numpy scalars are slow)
        self.latency = [math.inf] * len(self.scheduled)  # inf: never answered
        self.status = [0] * len(self.scheduled)
        self.lag = [math.inf] * len(self.scheduled)  # inf: never sent, as late as can be
        self.idle: list[_Connection] = []
        self.due: collections.deque[int] = collections.deque()  # due, waiting for a connection
        self.connections = self.connecting = self.pending = 0
        self.max_connections = max_connections
        self.done = False  # open loop: every request dispatched
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
        elif self.closed and (now := time.perf_counter()) < self.until:
            self.scheduled.append(now)
            self.latency.append(math.inf)
            self.status.append(0)
            self.lag.append(0.0)
            self.pending += 1
            self.send(conn, len(self.scheduled) - 1)
        else:
            self.idle.append(conn)

    def answered(self, index: int, status: int) -> None:
        self.latency[index] = time.perf_counter() - self.scheduled[index]
        self.status[index] = status
        self.pending -= 1
        if self.pending == 0 and (self.done or (self.closed and time.perf_counter() >= self.until)):
            self._finish()

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)

    def lost(self, conn: _Connection) -> None:
        self.connections -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.index >= 0:
            self.answered(conn.index, 0)  # closed with its request unanswered: status 0
        if self.due:
            self._connect()
        elif self.closed and self.connections == 0:
            self._finish()  # a closed loop that lost every connection

    def dispatch(self, index: int) -> None:
        self.pending += 1
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
            await self.connect()
        except OSError:
            self.refused += 1  # the requests wait for another connection to free up
        finally:
            self.connecting -= 1

    async def connect(self) -> None:
        await asyncio.get_running_loop().create_connection(lambda: _Connection(self), self.host, self.port)
        self.connections += 1

    async def wait(self, linger: float) -> None:
        """Until every request sent is answered, ``linger`` seconds at most; then close the idle connections."""
        if self.pending:
            try:
                await asyncio.wait_for(asyncio.shield(self.finished), linger)
            except TimeoutError:
                pass
        for conn in list(self.idle):
            if conn.transport is not None:
                conn.transport.close()


@dataclass
class Result:
    """Per request, in send order: its time from the run's start (scheduled, or sent in a closed loop),
    latency (inf: unanswered), status (0: no answer) and send lag (inf: never sent)."""

    offsets: np.ndarray
    latency: np.ndarray
    status: np.ndarray
    lag: np.ndarray

    @classmethod
    def of(cls, run: _Run, offsets: np.ndarray) -> Result:
        return cls(offsets, np.array(run.latency), np.array(run.status, dtype=np.int32), np.array(run.lag))

    def window(self, warmup: float, duration: float) -> Result:
        """The requests (scheduled or sent) after the warm-up, within ``duration``."""
        keep = (self.offsets >= warmup) & (self.offsets < warmup + duration)
        return Result(self.offsets[keep], self.latency[keep], self.status[keep], self.lag[keep])

    @property
    def completed(self) -> int:
        """Requests that came back (answered, or their connection closed): for CPU per request."""
        return int(np.isfinite(self.latency).sum())


async def closed_loop(host: str, port: int, payload: bytes, concurrency: int, warmup: float, duration: float,
                      ) -> Result:
    """``concurrency`` connections, each sending its next request as its last answer arrives."""
    run = _Run(host, port, payload, concurrency)
    for _ in range(concurrency):
        await run.connect()
    start = time.perf_counter()
    run.until = start + warmup + duration
    for conn in [run.idle.pop() for _ in range(len(run.idle))]:
        run.free(conn)
    await run.finished
    await run.wait(0.0)
    return Result.of(run, np.array(run.scheduled) - start)


async def open_loop(host: str, port: int, payload: bytes, offsets: np.ndarray, max_connections: int,
                    initial_connections: int = 64, linger: float = 30.0, tick: float = TICK) -> Result:
    """Send ``payload`` at ``offsets`` (seconds from now), over ``max_connections`` at most, waking
    ``tick`` seconds apart at least."""
    start = time.perf_counter() + 0.05 + 0.001 * initial_connections
    run = _Run(host, port, payload, max_connections, (start + offsets).tolist())
    for _ in range(min(initial_connections, max_connections)):
        await run.connect()
    index, count, scheduled = 0, len(offsets), run.scheduled
    while index < count:
        now = time.perf_counter()
        while index < count and scheduled[index] <= now:
            run.dispatch(index)
            index += 1
        if index < count:
            await asyncio.sleep(max(tick, scheduled[index] - time.perf_counter()))
    run.done = True
    await run.wait(linger)
    return Result.of(run, np.asarray(offsets, dtype=np.float64))


def summarize(result: Result, warmup: float, duration: float, cpu: float) -> dict[str, Any]:
    """Requests in the window; rps counts 200s; percentiles over every request that came back."""
    measured = result.window(warmup, duration)
    back = np.isfinite(measured.latency)
    lat = measured.latency[back] if back.any() else np.array([math.nan])
    statuses = collections.Counter(measured.status.tolist())
    errors = len(measured.status) - statuses[200]
    return {
        "requests": len(measured.status), "errors": errors, "statuses": {str(k): v for k, v in statuses.items()},
        "rps": statuses[200] / duration,
        "p50_ms": float(np.percentile(lat, 50) * 1e3), "p95_ms": float(np.percentile(lat, 95) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3), "mean_ms": float(lat.mean() * 1e3),
        "generator_cpu_us_per_request": cpu / max(1, result.completed) * 1e6,
        "completed_total": result.completed,
    }


def slo_summary(result: Result, warmup: float, duration: float, cpu: float, slo: float) -> dict[str, Any]:
    """Goodput (200s within ``slo`` seconds, per second); percentiles over the 200s; refused (503),
    expired (504), unanswered and other statuses; the generator's send lag p99."""
    measured = result.window(warmup, duration)
    latency, status, lag = measured.latency, measured.status, measured.lag
    ok = status == 200
    success = latency[ok] if ok.any() else np.array([math.nan])
    return {
        "offered_rps": len(status) / duration, "good_rps": int((ok & (latency <= slo)).sum()) / duration,
        "ok_rps": int(ok.sum()) / duration,
        "p50_ms": float(np.percentile(success, 50) * 1e3), "p99_ms": float(np.percentile(success, 99) * 1e3),
        "refused": int((status == 503).sum()), "expired": int((status == 504).sum()),
        "unanswered": int((status == 0).sum()), "requests": len(status),
        "other": int((~np.isin(status, [0, 200, 503, 504])).sum()),
        "send_lag_p99_ms": float(np.percentile(lag, 99) * 1e3) if len(lag) else 0.0,
        "generator_cpu_us_per_request": cpu / max(1, len(result.offsets)) * 1e6,
    }


def use_uvloop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def run(url: str, payload: bytes, mode: str, concurrency: int = 16, rate: float = 100.0, warmup: float = 1.0,
        duration: float = 5.0, max_connections: int = 512, process: str = "poisson", seed: int = 0,
        slo: float | None = None, tick: float = TICK) -> dict[str, Any]:
    """One closed- or open-loop run against ``url``: the summary (``slo_summary`` when ``slo`` is given)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    use_uvloop()
    cpu = time.process_time()
    if mode == "closed":
        result = asyncio.run(closed_loop(host, port, payload, concurrency, warmup, duration))
    else:
        offsets = arrival_offsets(process, rate, warmup + duration, seed)
        result = asyncio.run(open_loop(host, port, payload, offsets, max_connections, tick=tick))
    cpu = time.process_time() - cpu
    if slo is not None:
        return slo_summary(result, warmup, duration, cpu, slo)
    return summarize(result, warmup, duration, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--payload", required=True, help="file with the raw request bytes")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--concurrency", type=int, default=16, help="closed loop: connections")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: mean requests per second")
    parser.add_argument("--process", choices=PROCESSES, default="poisson", help="open loop: arrival process")
    parser.add_argument("--seed", type=int, default=0, help="open loop: of the arrival times")
    parser.add_argument("--slo", type=float, help="seconds: print goodput within it, refusals and send lag")
    parser.add_argument("--tick", type=float, default=TICK,
                        help="open loop: seconds between wake-ups at least (0: on time, spinning a core)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-connections", type=int, default=512)
    args = parser.parse_args()
    with open(args.payload, "rb") as handle:
        payload = handle.read()
    json.dump(run(args.url, payload, args.mode, args.concurrency, args.rate, args.warmup, args.duration,
                  args.max_connections, args.process, args.seed, args.slo, args.tick), sys.stdout)


if __name__ == "__main__":
    main()
