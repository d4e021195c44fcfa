"""gRPC benchmark: batchserve's gRPC V2 (raw contents) beside HTTP V2 binary and JSON, and beside the floor.

The floor is a bare gRPC server in its own process, pinned like the server: one generic handler that
takes the request's bytes unparsed and answers a few bytes: ``grpc.aio`` on uvloop (``floor_aio``, the
floor the targets name), the same handler waiting one event-loop turn (``floor_aio_wait``, as a batched
call waits), the sync ``grpc.server`` with a thread pool (``floor_sync``), and the sync server handing
each call to an event-loop thread and blocking on the answer (``floor_sync_bridge``: what serving the
batchers from a sync server would cost at least). batchserve serves synthetic models with the tabular (128-byte
tensor) and image_classifier (110,592-byte tensor) signatures, so the server's own work is what is
measured: parsing, validation, batching, encoding. Server pinned to core 0, the generator to core 1;
closed loop at --concurrency calls over --channels connections; server CPU per request from /proc.
Every point is repeated (--repeats), alternating, and reported as a range.

    python -m load_tests.research.grpc_bench --duration 5 --repeats 3
    python -m load_tests.research.grpc_bench --kinds floor_aio,grpc_v2_raw --bodies tabular   # what a change touches
    python -m load_tests.research.grpc_bench --frontends 2 --server-cores 0-2 --generator-cores 3   # on more cores

The gRPC generator is this module too (the ``generate`` subcommand); the floor servers are ``grpc_floor``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..generator import build_request
from ..harness.local_server import ROOT, LocalServer, taskset
from ..harness.payloads import encode, example_inputs
from .grpc_floor import FloorServer
from .scaling import process_tree, write_repository

METHOD = "/inference.GRPCInferenceService/ModelInfer"
KINDS = ("floor_aio", "floor_aio_wait", "floor_sync", "floor_sync_bridge", "grpc_v2_raw", "http_v2_binary",
         "http_v2_json")


@dataclass
class Point:
    body: str
    kind: str
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    server_cpu_us: float
    generator_busy: float
    # server CPU per request by thread (the server's own process): the event loop's thread, the other Python
    # threads (gRPC's completion-queue poller, model threads) and gRPC core's threads (event_engine, timers)
    threads_us: dict[str, float] = field(default_factory=dict)
    mean_batch: float = 0.0  # rows per batch while measured (batchserve only)


# ---- the gRPC generator ------------------------------------------------------------------------------------


async def _generate(target: str, payload: bytes, concurrency: int, channels: int, warmup: float,
                    duration: float) -> dict[str, Any]:
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1),  # one TCP connection per channel (front ends spread them)
               ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    calls = [channel.unary_unary(METHOD) for channel in opened]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    completed = 0
    measuring = False
    stop_at = 0.0

    async def worker(index: int) -> None:
        nonlocal completed
        call = calls[index % channels]
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                await call(payload, timeout=30)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] = errors.get(error.code().name, 0) + 1
                continue
            completed += 1
            if measuring:
                latencies.append(time.perf_counter() - started)

    for channel in opened:
        await channel.channel_ready()
    cpu = time.process_time()
    stop_at = time.monotonic() + warmup + duration
    tasks = [asyncio.ensure_future(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring, measured_from = True, completed
    began = time.monotonic()
    await asyncio.gather(*tasks)
    wall = time.monotonic() - began
    cpu = time.process_time() - cpu
    for channel in opened:
        await channel.close()
    lat = np.array(latencies or [0.0]) * 1000
    return {"requests": completed - measured_from, "completed_total": completed, "rps": (completed - measured_from)
            / wall, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "errors": errors, "generator_cpu_s": cpu, "wall_s": wall + warmup}


def infer_payload(body: str) -> bytes:
    """One serialized ModelInferRequest with raw contents, as tritonclient.grpc sends it."""
    from server.grpc import protos
    from server.grpc.tensors import v2_request

    request = protos.message("inference.ModelInferRequest")(model_name=body)
    v2_request(request, example_inputs(body))
    request.parameters["timeout"].int64_param = 5_000_000
    return request.SerializeToString()  # type: ignore[no-any-return]


# ---- driving ---------------------------------------------------------------------------------------------


def _server_cpu(pid: int) -> float:
    return process_tree(pid)[0]


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of ``pid``'s threads: ``loop`` (the main thread, where the event loop runs),
    ``python`` (other Python threads: gRPC's poller, model threads) and ``grpc_core`` (threads gRPC's core
    names, event_engine and timers). Linux only (empty elsewhere)."""
    totals: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            head, tail = (task / "stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        comm = head.split("(", 1)[1]
        kind = "loop" if task.name == str(pid) else ("python" if comm.startswith("python") else "grpc_core")
        totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


def _per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    return {kind: round((seconds - before.get(kind, 0.0)) / max(1, requests) * 1e6, 1)
            for kind, seconds in sorted(after.items())}


def _drive_grpc(target: str, pid: int, payload_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [*taskset(args.generator_cores), sys.executable, "-m", "load_tests.research.grpc_bench", "generate",
               "--target", target, "--payload", str(payload_file), "--concurrency", str(args.concurrency),
               "--channels", str(args.channels), "--warmup", str(args.warmup), "--duration", str(args.duration)]
    cpu, threads = _server_cpu(pid), _thread_cpu(pid)
    result: dict[str, Any] = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                                       check=True).stdout)
    result["server_cpu_us"] = (_server_cpu(pid) - cpu) / max(1, result["completed_total"]) * 1e6
    result["threads_us"] = _per_request(threads, _thread_cpu(pid), result["completed_total"])
    return result


def _drive_http(server: LocalServer, payload_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [*taskset(args.generator_cores), sys.executable, "-m", "load_tests.generator", "--url", server.url,
               "--payload", str(payload_file), "--mode", "closed", "--concurrency", str(args.concurrency),
               "--warmup", str(args.warmup), "--duration", str(args.duration)]
    cpu = _server_cpu(server.process.pid)
    result: dict[str, Any] = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                                       check=True).stdout)
    result["server_cpu_us"] = (_server_cpu(server.process.pid) - cpu) / max(1, result["completed_total"]) * 1e6
    return result


def _point(body: str, kind: str, repeat: int, result: dict[str, Any], args: argparse.Namespace) -> Point:
    errors = result.get("errors") or {}
    wall = result.get("wall_s") or (args.warmup + args.duration)
    cpu = float(result.get("generator_cpu_s") or 0.0)
    if "generator_cpu_s" not in result:  # the HTTP generator reports per request
        cpu = result["generator_cpu_us_per_request"] * result["completed_total"] / 1e6
    return Point(body, kind, repeat, round(result["rps"], 1), round(result["p50_ms"], 3), round(result["p99_ms"], 3),
                 int(result["requests"]), int(sum(errors.values()) if isinstance(errors, dict) else errors),
                 round(result["server_cpu_us"], 1), round(cpu / wall, 2), result.get("threads_us") or {})


def measure(args: argparse.Namespace, workdir: Path) -> list[Point]:
    repository = write_repository(workdir / "repo", args.base_ms, args.per_row_ms)
    points: list[Point] = []
    for repeat in range(args.repeats):
        for body in args.bodies:
            payload = workdir / f"{body}.grpc"
            payload.write_bytes(infer_payload(body))
            for kind, extra in (("aio", ()), ("aio", ("--suspend",)), ("sync", ()), ("sync_bridge", ())):
                if f"floor_{kind}" + ("_wait" if extra else "") not in args.kinds:
                    continue
                floor = FloorServer(kind, args.server_cores, *extra)
                try:
                    result = _drive_grpc(floor.grpc_target, floor.process.pid, payload, args)
                finally:
                    floor.stop()
                points.append(_point(body, f"floor_{kind}" + ("_wait" if extra else ""), repeat, result, args))
                print(points[-1], file=sys.stderr)
            if not any(kind in args.kinds for kind in ("grpc_v2_raw", "http_v2_binary", "http_v2_json")):
                continue
            server = LocalServer(repository, workdir / f"server-{body}-{repeat}.log", core=args.server_cores,
                                 poll_interval=0, log_level="warning", frontends=args.frontends).wait_ready()
            try:
                if "grpc_v2_raw" in args.kinds:
                    rows, batches = server.batch_totals(body)
                    result = _drive_grpc(server.grpc_target, server.process.pid, payload, args)
                    points.append(_point(body, "grpc_v2_raw", repeat, result, args))
                    after = server.batch_totals(body)
                    points[-1].mean_batch = round((after[0] - rows) / max(1.0, after[1] - batches), 1)
                    print(points[-1], file=sys.stderr)
                for fmt in ("v2_binary", "v2_json"):
                    if f"http_{fmt}" not in args.kinds:
                        continue
                    encoded = encode(body, fmt, timeout_us=5_000_000)
                    request = workdir / f"{body}-{fmt}.req"
                    request.write_bytes(build_request(server.url + encoded.path, encoded.body, encoded.content_type,
                                                      encoded.headers))
                    points.append(_point(body, f"http_{fmt}", repeat, _drive_http(server, request, args), args))
                    print(points[-1], file=sys.stderr)
            finally:
                server.stop()
    return points


def table(points: list[Point]) -> list[str]:
    """One row per (body, kind): ranges over the repeats, and the server CPU against the better floor."""
    lines = [f"{'body':<17} {'kind':<18} {'req/s':>17} {'server CPU us/req':>19} {'x floor':>11} "
             f"{'p50 ms':>13} {'p99 ms':>13} {'errors':>6}"]

    def span(values: list[float], digits: int = 0) -> str:
        low, high = min(values), max(values)
        return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else \
            f"{low:.{digits}f}-{high:.{digits}f}"

    for body in dict.fromkeys(p.body for p in points):
        floor = [p.server_cpu_us for p in points if p.body == body and p.kind == "floor_aio"]
        floor_us = float(np.median(floor)) if floor else 0.0
        for kind in KINDS:
            group = [p for p in points if p.body == body and p.kind == kind]
            if not group:
                continue
            cpu = [p.server_cpu_us for p in group]
            ratio = span([c / floor_us for c in cpu], 2) if floor_us else "-"
            lines.append(f"{body:<17} {kind:<18} {span([p.rps for p in group]):>17} {span(cpu):>19} {ratio:>11} "
                         f"{span([p.p50_ms for p in group], 2):>13} {span([p.p99_ms for p in group], 2):>13} "
                         f"{sum(p.errors for p in group):>6}")
    lines.append("x floor: server CPU per request against the median of floor_aio (a bare grpc.aio handler)")
    lines.append("")
    lines.append(f"{'body':<17} {'kind':<18} server CPU us/req by thread: loop (event loop) / python (gRPC poller, "
                 "model threads) / grpc_core")
    for body in dict.fromkeys(p.body for p in points):
        for kind in KINDS:
            group = [p for p in points if p.body == body and p.kind == kind and p.threads_us]
            if kind.startswith("http") or not group:
                continue
            parts = [f"{name} {span([p.threads_us.get(name, 0.0) for p in group])}"
                     for name in ("loop", "python", "grpc_core")]
            batch = f"   mean batch {span([p.mean_batch for p in group], 1)}" if kind == "grpc_v2_raw" else ""
            lines.append(f"{body:<17} {kind:<18} {' / '.join(parts)}{batch}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    generate = sub.add_parser("generate", help="closed-loop gRPC load (internal)")
    generate.add_argument("--target", required=True)
    generate.add_argument("--payload", required=True)
    for name, count in (("concurrency", 32), ("channels", 4)):
        generate.add_argument(f"--{name}", type=int, default=count)
    for name, seconds in (("warmup", 1.0), ("duration", 5.0)):
        generate.add_argument(f"--{name}", type=float, default=seconds)
    parser.add_argument("--bodies", default="tabular,image_classifier")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"what to measure, of {','.join(KINDS)}")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--channels", type=int, default=4, help="gRPC connections the generator opens")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frontends", type=int, default=1)
    parser.add_argument("--server-cores", default="0")
    parser.add_argument("--generator-cores", default="1")
    parser.add_argument("--base-ms", type=float, default=0.52, help="synthetic model: sleep per batch")
    parser.add_argument("--per-row-ms", type=float, default=0.0077, help="synthetic model: sleep per row")
    parser.add_argument("--out", default=None, help="write the points as JSON here")
    args = parser.parse_args(argv)
    if args.command == "generate":
        import uvloop

        result = uvloop.run(_generate(args.target, Path(args.payload).read_bytes(), args.concurrency, args.channels,
                                      args.warmup, args.duration))
        print(json.dumps(result))
        return
    args.bodies = [b for b in args.bodies.split(",") if b]
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(args.kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown kind {unknown[0]!r}; kinds: {', '.join(KINDS)}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    with tempfile.TemporaryDirectory(prefix="grpc-bench-") as tmp:
        points = measure(args, Path(tmp))
    print("\n".join(table(points)))
    print(f"server cores {args.server_cores}, generator cores {args.generator_cores}, frontends {args.frontends}, "
          f"concurrency {args.concurrency} over {args.channels} connections, {args.duration:g}s x {args.repeats}, "
          f"{os.cpu_count()} CPUs")
    if args.out:
        Path(args.out).write_text(json.dumps([asdict(p) for p in points], indent=1))


if __name__ == "__main__":
    main()
