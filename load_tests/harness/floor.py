"""The floor in ``batchserve bench``: one batchserve front end beside a bare handler, in the same run.

For each body (a 96x96x3 image as float32, 110 KB; as uint8 pixels, 27 KB; as a JPEG, 6 KB; a tabular row of
32 float32, 128 B; all binary V2): batchserve (one process, the synthetic models with the H200's timings:
``load_tests/harness/synthetic.py``) and the bare uvicorn + httptools + uvloop handler
(``load_tests/harness/bare_handler.py``), each alone on the server core, driven by the same generator on the
other core at the same connections, alternating, ``repeats`` times. Per body: requests/s and server CPU per
request of both, and their ratios (the issue 25 target, for 110 KB and 128 B: at most 1.25x the bare handler's
CPU a request, i.e. at least 0.8 of its requests/s on one pinned core), so the gap cannot drift unseen.

At 64 connections a batching server is latency-bound: its clients wait for their batch (up to
``max_queue_delay``) while the bare handler answers each at once, so its core idles and only the CPU a request
compares. The target bodies are also driven at ``CAPACITY_CONNECTIONS``, where both servers keep their core
busy (the table says how busy) and requests/s compare as capacity.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..generator import build_request
from .local_server import ROOT, BareServer, LocalServer, Server, cpu_seconds, taskset
from .payloads import encode
from .synthetic import write_repository

BODIES = ("image_classifier", "image_uint8", "image_jpeg", "tabular")
CONNECTIONS = 64
CAPACITY_CONNECTIONS = 256  # the target bodies again, enough connections to keep both servers' core busy
TARGET = 0.8  # batchserve's requests/s at least this share of the bare handler's (one pinned core), at capacity
CPU_TARGET = 1.25  # batchserve's CPU a request at most this multiple of the bare handler's
TARGET_BODIES = ("image_classifier", "tabular")


@dataclass
class FloorPoint:
    body: str
    body_bytes: int
    server: str  # "batchserve" or "bare"
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us: float
    generator_cpu_us: float
    connections: int = CONNECTIONS

    @property
    def busy(self) -> float:
        """The share of its core the server kept busy."""
        return self.rps * self.server_cpu_us / 1e6


def _drive(server: Server, request: Path, core: str | None, warmup: float, duration: float, connections: int
           ) -> dict[str, Any]:
    command = [*taskset(core), sys.executable, "-m", "load_tests.generator", "--url", server.url, "--payload",
               str(request), "--mode", "closed", "--concurrency", str(connections), "--warmup", str(warmup),
               "--duration", str(duration)]
    cpu = cpu_seconds(server.process.pid)
    result: dict[str, Any] = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                                       check=True).stdout)
    result["server_cpu_us"] = (cpu_seconds(server.process.pid) - cpu) / max(1, result["completed_total"]) * 1e6
    return result


def _start(kind: str, repository: Path, workdir: Path, core: str | None) -> Server:
    log = workdir / f"floor-{kind}.log"
    if kind == "bare":
        return BareServer([sys.executable, "-m", "load_tests.harness.bare_handler"], core, log).wait_ready()
    return LocalServer(repository, log, core=core, poll_interval=0, default_timeout_ms=5000,
                       log_level="warning").wait_ready()


def measure_floor(workdir: Path, pinned: bool, warmup: float, duration: float, repeats: int = 2,
                  bodies: tuple[str, ...] = BODIES, echo: bool = True, capacity: bool = True) -> list[FloorPoint]:
    """Every body on both servers, ``repeats`` times, the servers' order alternating between repeats; with
    ``capacity``, the target bodies again at CAPACITY_CONNECTIONS."""
    runs = [(body, CONNECTIONS) for body in bodies]
    if capacity:
        runs += [(body, CAPACITY_CONNECTIONS) for body in bodies if body in TARGET_BODIES]
    repository = write_repository(workdir / "floor-repository")
    server_core, generator_core = ("0", "1") if pinned else (None, None)
    points: list[FloorPoint] = []
    for repeat in range(repeats):
        for kind in ("batchserve", "bare") if repeat % 2 == 0 else ("bare", "batchserve"):
            server = _start(kind, repository, workdir, server_core)
            try:
                for body, connections in runs:
                    payload = encode(body, "v2_binary")  # deadlines: the server's default_timeout_ms
                    request = workdir / f"floor-{body}.req"
                    request.write_bytes(build_request(server.url + payload.path, payload.body,
                                                      payload.content_type, payload.headers))
                    r = _drive(server, request, generator_core, warmup, duration, connections)
                    points.append(FloorPoint(body, len(payload.body), kind, repeat, r["rps"], r["p50_ms"],
                                             r["p99_ms"], r["errors"], r["server_cpu_us"],
                                             r["generator_cpu_us_per_request"], connections))
                    if echo:
                        p = points[-1]
                        print(f"  floor {p.server:<10} {p.body:<16} {p.body_bytes:>7} B {p.connections:>4} conn  "
                              f"{p.rps:>8.0f} req/s  {p.server_cpu_us:>6.1f} µs CPU/request  busy {p.busy:.2f}  "
                              f"p50 {p.p50_ms:.2f} ms  errors {p.errors}", flush=True)
            finally:
                server.stop()
    return points


def _summary(points: list[FloorPoint], body: str, connections: int = CONNECTIONS) -> dict[str, Any] | None:
    mine = [p for p in points if p.body == body and p.server == "batchserve" and p.connections == connections]
    bare = [p for p in points if p.body == body and p.server == "bare" and p.connections == connections]
    if not mine or not bare:
        return None
    rps, floor = [p.rps for p in mine], [p.rps for p in bare]
    cpu, floor_cpu = [p.server_cpu_us for p in mine], [p.server_cpu_us for p in bare]
    return {"body": body, "bytes": mine[0].body_bytes, "connections": connections, "rps": rps, "bare_rps": floor,
            "cpu_us": cpu, "bare_cpu_us": floor_cpu, "busy": [p.busy for p in mine],
            "bare_busy": [p.busy for p in bare], "ratio": float(np.mean(rps) / np.mean(floor)),
            "cpu_ratio": float(np.mean(cpu) / np.mean(floor_cpu)),
            "extra_cpu_us": float(np.mean(cpu) - np.mean(floor_cpu))}


def _groups(points: list[FloorPoint]) -> list[tuple[str, int]]:
    return list(dict.fromkeys((p.body, p.connections) for p in points))


def floor_table(points: list[FloorPoint]) -> list[str]:
    """One line per body and connections: both servers' requests/s, CPU a request and busy share of their core
    (ranges over repeats), and the ratios."""
    lines = [f"{'body':<16} {'bytes':>7} {'conn':>4} {'batchserve req/s':>17} {'bare req/s':>13} {'ratio':>6} "
             f"{'batchserve µs/req':>17} {'bare µs/req':>12} {'CPU ratio':>9} {'extra µs':>8} {'busy':>9} "
             f"{'bare busy':>9}"]
    for body, connections in _groups(points):
        s = _summary(points, body, connections)
        if s is None:
            continue
        lines.append(f"{body:<16} {s['bytes']:>7} {connections:>4} {_span(s['rps'], '.0f'):>17} "
                     f"{_span(s['bare_rps'], '.0f'):>13} {s['ratio']:>6.2f} {_span(s['cpu_us'], '.1f'):>17} "
                     f"{_span(s['bare_cpu_us'], '.1f'):>12} {s['cpu_ratio']:>9.2f} {s['extra_cpu_us']:>8.1f} "
                     f"{_span(s['busy'], '.2f'):>9} {_span(s['bare_busy'], '.2f'):>9}")
    return lines


def floor_targets(points: list[FloorPoint]) -> list[str]:
    """Issue 25's target per body of TARGET_BODIES: met or missed, and by how much. Met: at most CPU_TARGET times
    the bare handler's CPU a request at every connection count measured, and, at capacity (when measured), at
    least TARGET of its requests/s."""
    lines = []
    for body in TARGET_BODIES:
        latency = _summary(points, body)
        capacity = _summary(points, body, CAPACITY_CONNECTIONS)
        if latency is None and capacity is None:
            lines.append(f"  n/a   {body}: not measured in this run")
            continue
        measured = [s for s in (latency, capacity) if s is not None]
        met = all(s["cpu_ratio"] <= CPU_TARGET for s in measured) and (capacity is None or capacity["ratio"] >= TARGET)
        parts = [f"CPU a request {s['cpu_ratio']:.2f}x at {s['connections']} connections" for s in measured]
        if capacity is not None:
            parts.append(f"requests/s {capacity['ratio']:.2f} at {CAPACITY_CONNECTIONS}")
        size = measured[0]["bytes"]
        lines.append(f"  {'MET ' if met else 'MISS'}  {body} ({size} B V2 binary): batchserve / bare handler "
                     f"{'; '.join(parts)} (targets: CPU <= {CPU_TARGET}x; requests/s >= {TARGET} at capacity)")
    return lines


def floor_summaries(points: list[FloorPoint]) -> list[dict[str, Any]]:
    return [s for body, connections in _groups(points) if (s := _summary(points, body, connections)) is not None]


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    return f"{low:{fmt}}" if f"{low:{fmt}}" == f"{high:{fmt}}" else f"{low:{fmt}}-{high:{fmt}}"
