"""A lean HTTP/1.1 load generator: pre-encoded requests, keep-alive connections, uvloop.

Closed loop: N connections, each sends its next request when the last answer
arrives. Open loop: Poisson arrivals at a fixed rate; latency is measured from
each request's *scheduled* send time, so a server that falls behind cannot hide
its queueing (closed-loop tools, locust included, understate latency under overload).

    python -m load_tests.generator --url http://127.0.0.1:8000/v2/models/m/infer --payload req.bin \
        --mode open --rate 500 --duration 5

The payload file holds the full request (request line, headers, body) as sent.
Prints one JSON object: requests, errors by status, latencies, generator CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(-1)
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None:
            return
        answer = complete_response(self.buffer)
        if answer is not None:
            status, total = answer
            del self.buffer[:total]
            waiter, self.waiter = self.waiter, None
            waiter.set_result(status)

    async def send(self, payload: bytes) -> int:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


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


async def _connect(host: str, port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, host, port)
    return protocol


class _Recorder:
    def __init__(self, measure_from: float, measure_until: float) -> None:
        self.measure_from, self.measure_until = measure_from, measure_until
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.completed = 0  # warm-up included: for per-request CPU accounting

    def record(self, scheduled: float, status: int) -> None:
        self.completed += 1
        if self.measure_from <= scheduled < self.measure_until:
            self.latencies.append(time.perf_counter() - scheduled)
            self.statuses[status] = self.statuses.get(status, 0) + 1


async def closed_loop(host: str, port: int, payload: bytes, concurrency: int, warmup: float, duration: float
                      ) -> _Recorder:
    connections = [await _connect(host, port) for _ in range(concurrency)]
    start = time.perf_counter()
    recorder = _Recorder(start + warmup, start + warmup + duration)

    async def loop(conn: _Connection) -> None:
        while True:
            sent = time.perf_counter()
            if sent >= recorder.measure_until:
                return
            recorder.record(sent, await conn.send(payload))

    await asyncio.gather(*(loop(c) for c in connections))
    for conn in connections:
        assert conn.transport is not None
        conn.transport.close()
    return recorder


async def open_loop(host: str, port: int, payload: bytes, rate: float, warmup: float, duration: float,
                    max_connections: int, seed: int = 0) -> _Recorder:
    rng = np.random.default_rng(seed)
    total = warmup + duration
    gaps = rng.exponential(1.0 / rate, size=int(rate * total * 1.5) + 10)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < total]
    idle: asyncio.Queue[_Connection] = asyncio.Queue()
    for _ in range(min(max_connections, max(8, int(rate * 0.05)))):
        idle.put_nowait(await _connect(host, port))
    opened = idle.qsize()
    start = time.perf_counter() + 0.05
    recorder = _Recorder(start + warmup, start + total)
    tasks: set[asyncio.Task[None]] = set()

    async def one(scheduled: float) -> None:
        nonlocal opened
        if idle.empty() and opened < max_connections:
            opened += 1
            conn = await _connect(host, port)
        else:
            conn = await idle.get()
        recorder.record(scheduled, await conn.send(payload))
        idle.put_nowait(conn)

    loop = asyncio.get_running_loop()
    for offset in offsets:
        scheduled = start + float(offset)
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = loop.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    # Requests still unanswered long after the run count as what they are: late.
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    return recorder


def summarize(recorder: _Recorder, duration: float, cpu: float) -> dict[str, Any]:
    lat = np.array(recorder.latencies) if recorder.latencies else np.array([float("nan")])
    count = len(recorder.latencies)
    errors = sum(n for status, n in recorder.statuses.items() if status != 200)
    return {
        "requests": count, "errors": errors, "statuses": {str(k): v for k, v in recorder.statuses.items()},
        "rps": (count - errors) / duration,
        "p50_ms": float(np.percentile(lat, 50) * 1e3), "p95_ms": float(np.percentile(lat, 95) * 1e3),
        "p99_ms": float(np.percentile(lat, 99) * 1e3), "mean_ms": float(lat.mean() * 1e3),
        "generator_cpu_us_per_request": cpu / max(1, recorder.completed) * 1e6,
        "completed_total": recorder.completed,
    }


def run(url: str, payload: bytes, mode: str, concurrency: int, rate: float, warmup: float, duration: float,
        max_connections: int = 512) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cpu = time.process_time()
    if mode == "closed":
        recorder = asyncio.run(closed_loop(host, port, payload, concurrency, warmup, duration))
    else:
        recorder = asyncio.run(open_loop(host, port, payload, rate, warmup, duration, max_connections))
    return summarize(recorder, duration, time.process_time() - cpu)


def build_request(url: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> bytes:
    """The raw bytes of one POST, encoded once and sent many times."""
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--payload", required=True, help="file with the raw request bytes")
    parser.add_argument("--mode", choices=["closed", "open"], default="closed")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests per second (Poisson)")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-connections", type=int, default=512)
    args = parser.parse_args()
    with open(args.payload, "rb") as handle:
        payload = handle.read()
    result = run(args.url, payload, args.mode, args.concurrency, args.rate, args.warmup, args.duration,
                 args.max_connections)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
