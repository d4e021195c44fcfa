"""Front-end scaling: requests/s, latency and mean batch size with N front ends against a synthetic model.

For each N in --frontends, each repeat and each body (a 110 KB V2 binary image, a
128-byte V2 binary tabular row; deadlines on, as the server's default): a server with ``frontends=N`` pinned to its own
cores (default: 0..N, N front ends + 1 engine; core 0 for N=1), driven closed
loop by the lean generator in several processes, each pinned to one of the
remaining cores, --connections split among them; with --equal-load, also open
loop (Poisson) at the same offered rate for every N, to compare mean batch sizes.

    python -m load_tests.research.scaling --frontends 1,2 --duration 8 --connections 64 --equal-load 0.7x
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from .. import generator
from ..harness.local_server import ROOT, LocalServer, cpu_seconds, machine, taskset
from ..harness.payloads import encode
from ..harness.synthetic import MODELS, write_repository

N1_GOALS = {"image_classifier": 7500, "tabular": 15000}  # issue 11: one front end's req/s on one core
DEFAULT_BODIES = ["image_classifier", "tabular"]  # 110,741-byte V2 binary body; 128 bytes of tensor (272 in all)


@dataclass
class Plan:
    frontends: list[int] = field(default_factory=lambda: [1, 2])
    bodies: list[str] = field(default_factory=lambda: list(DEFAULT_BODIES))
    connections: int = 64
    connections_per_frontend: int = 0  # closed loop: at least this many per front end (keeps large N saturated)
    equal_load: list[str] = field(default_factory=list)  # "3000" req/s, or "0.7x" of N=1's closed-loop req/s
    duration: float = 8.0
    warmup: float = 1.0
    repeats: int = 2
    server_cores: str | None = None
    generator_procs: int | None = None
    base_ms: float = 0.52
    per_row_ms: float = 0.0077
    equal_load_policy: str = "delay"


@dataclass
class Point:
    frontends: int
    body: str
    body_bytes: int
    mode: str
    load: float
    repeat: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    mean_batch: float
    server_cpu_us: float
    generator_cpu_us: float
    generator_busy: float  # generator CPU / (processes x wall): near 1.0 means the generator is the limit
    engine_busy: float  # the engine process's CPU / wall (N > 1): near 1.0 means the engine is the limit
    frontend_busy: float  # mean CPU / wall of one front end (N = 1: the one server process)
    server_processes: int
    server_cores: str
    generator_cores: list[int]


def process_tree(root: int) -> tuple[float, int]:
    """(user + system CPU seconds, processes) of ``root`` and its descendants, reaped children included."""
    stats: dict[int, list[str]] = {}
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    ticks, count, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            ticks, count = ticks + sum(int(v) for v in stats[pid][11:15]), count + 1
            todo += children.get(pid, [])
    return ticks / os.sysconf("SC_CLK_TCK"), count


def engine_seconds(root: int) -> float:
    """CPU seconds of the supervisor's engine process so far (0 without one)."""
    try:
        children = Path(f"/proc/{root}/task/{root}/children").read_text().split()
    except OSError:
        return 0.0
    for pid in children:
        try:
            if b"engine" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return cpu_seconds(int(pid))
        except OSError:
            continue
    return 0.0


def layout(n: int, plan: Plan) -> tuple[str, list[int]]:
    """The server's cores (a taskset list) and one core per generator process."""
    cores = sorted(os.sched_getaffinity(0))
    if plan.server_cores:
        server = plan.server_cores
        spans = [part.split("-") for part in server.split(",")]
        used = {c for span in spans for c in range(int(span[0]), int(span[-1]) + 1)}
    else:
        used = set(cores[: min(n + 1 if n > 1 else 1, max(1, len(cores) - 1))])
        server = ",".join(map(str, sorted(used)))
    rest = [c for c in cores if c not in used] or cores[-1:]
    if len(used) < (n + 1 if n > 1 else 1) or set(rest) & used:
        print(f"note: N={n} on cores {server}, generator on {rest}: fewer cores than the layout wants", file=sys.stderr)
    procs = plan.generator_procs or len(rest)
    return server, [rest[i % len(rest)] for i in range(procs)]


def drive(server: LocalServer, model: str, request: Path, mode: str, load: float, cores: list[int], plan: Plan,
          workdir: Path) -> dict[str, Any]:
    """Run the generator processes at once (a shared start time) and merge their results."""
    procs = min(len(cores), int(load)) if mode == "closed" else len(cores)
    start_at = time.time() + 1.0 + 0.05 * procs  # after every process has imported and is waiting
    jobs = []
    for i in range(procs):
        share = int(load) // procs + (i < int(load) % procs) if mode == "closed" else load / procs
        command = [*taskset(str(cores[i])), sys.executable, "-m", "load_tests.research.scaling", "--worker",
                   json.dumps({"url": server.url, "request": str(request), "mode": mode, "load": share, "seed": i,
                               "warmup": plan.warmup, "duration": plan.duration, "start_at": start_at,
                               "latencies": str(workdir / f"latencies-{i}.npy")})]
        jobs.append(subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    cpu, rows = process_tree(server.process.pid), server.batch_totals(model)
    engine_before = engine_seconds(server.process.pid)
    results = [json.loads(job.communicate()[0] or "null") for job in jobs]
    if not all(results):
        raise RuntimeError(f"a generator process failed (exit codes {[job.returncode for job in jobs]})")
    if (late := max(r["late_s"] for r in results)) > 0.1:
        print(f"note: a generator process started {late:.2f} s late; its window is shifted", file=sys.stderr)
    cpu_after, server_processes = process_tree(server.process.pid)
    wall = plan.warmup + plan.duration
    engine_busy = (engine_seconds(server.process.pid) - engine_before) / wall
    frontends = max(1, server_processes - 2) if server_processes > 1 else 1
    frontend_busy = ((cpu_after - cpu[0]) - engine_busy * wall) / (frontends * wall)
    after = server.batch_totals(model)
    latencies = np.concatenate([np.load(workdir / f"latencies-{i}.npy") for i in range(procs)]) * 1e3
    completed = sum(r["completed_total"] for r in results)
    generator_cpu = sum(r["generator_cpu_us_per_request"] * r["completed_total"] for r in results) / 1e6
    return {"rps": sum(r["rps"] for r in results), "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "requests": len(latencies),
            "errors": sum(r["errors"] for r in results),
            "mean_batch": (after[0] - rows[0]) / max(1.0, after[1] - rows[1]),
            "server_cpu_us": (cpu_after - cpu[0]) / max(1, completed) * 1e6,
            "generator_cpu_us": generator_cpu / max(1, completed) * 1e6,
            "generator_busy": generator_cpu / (procs * (plan.warmup + plan.duration)),
            "engine_busy": engine_busy, "frontend_busy": frontend_busy,
            "server_processes": server_processes, "generator_cores": cores[:procs]}


def worker(spec: dict[str, Any]) -> None:
    """One generator process: wait for the shared start, run, print the summary, save the latencies."""
    generator.use_uvloop()
    payload, parts = Path(spec["request"]).read_bytes(), urlsplit(spec["url"])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    late = time.time() - spec["start_at"]
    time.sleep(max(0.0, -late))
    cpu = time.process_time()
    warmup, duration = spec["warmup"], spec["duration"]
    if spec["mode"] == "closed":
        run = generator.closed_loop(host, port, payload, int(spec["load"]), warmup, duration)
    else:
        offsets = generator.arrival_offsets("poisson", spec["load"], warmup + duration, spec["seed"])
        run = generator.open_loop(host, port, payload, offsets, 512)
    result = asyncio.run(run)
    measured = result.window(warmup, duration).latency
    np.save(spec["latencies"], measured[np.isfinite(measured)])
    summary = generator.summarize(result, warmup, duration, time.process_time() - cpu)
    json.dump({**summary, "late_s": max(0.0, late)}, sys.stdout)


def measure(plan: Plan, workdir: Path, out: Path | None = None) -> list[Point]:
    """Every point of the plan; the JSON at ``out`` is rewritten after each one (a cut-off run keeps its data)."""
    repository = write_repository(workdir / "repository", plan.base_ms, plan.per_row_ms)
    points: list[Point] = []
    # Equal-load points compare batch formation across N: with the fixed-delay rule a batch's size depends
    # only on arrivals and max_queue_delay_ms, not on how quickly an idle model is noticed.
    open_settings = {"dispatch_when_idle": False} if plan.equal_load_policy == "delay" else {}
    for repeat in range(plan.repeats):
        for n in plan.frontends:
            server_cores, generator_cores = layout(n, plan)
            connections = max(plan.connections, plan.connections_per_frontend * n)
            runs: list[tuple[str, list[str], dict[str, Any]]] = [("closed", [str(connections)], {})]
            if plan.equal_load:
                runs.append(("open", plan.equal_load, open_settings))
            for mode, specs, settings in runs:
                server = LocalServer(repository, workdir / f"server-{n}-{repeat}-{mode}.log", core=server_cores,
                                     frontends=n, poll_interval=0, default_timeout_ms=5000, log_level="warning",
                                     **settings).wait_ready()
                try:
                    for model in plan.bodies:
                        payload = encode(model, "v2_binary")  # deadlines: the server's default_timeout_ms
                        request = workdir / f"{model}.req"
                        request.write_bytes(generator.build_request(server.url + payload.path, payload.body,
                                                                    payload.content_type, payload.headers))
                        for spec in specs:
                            load = _rate(spec, model, points) if mode == "open" else float(spec)
                            result = drive(server, model, request, mode, load, generator_cores, plan, workdir)
                            points.append(Point(n, model, len(payload.body), mode, load, repeat,
                                                server_cores=server_cores, **result))
                            print(_row(points[-1], None), flush=True)
                            if out:
                                out.write_text(json.dumps({"machine": machine(), "plan": asdict(plan),
                                                           "points": [asdict(p) for p in points]}, indent=1))
                finally:
                    server.stop()
    return points


def _rate(spec: str, model: str, points: list[Point]) -> float:
    if not spec.endswith("x"):
        return float(spec)
    base = [p.rps for p in points if (p.frontends, p.body, p.mode) == (1, model, "closed")]
    if not base:
        raise SystemExit(f"--equal-load {spec} needs N=1 first in --frontends")
    return round(float(spec[:-1]) * base[0])


HEADER = (f"{'N':>2} {'procs':>5} {'body':<22} {'load':>9} {'req/s':>15} {'p50ms':>6} {'p99ms':>13} {'err':>4} "
          f"{'mbatch':>6} {'srvCPUus':>8} {'genCPUus':>8} {'genbusy':>7} {'engine':>6} {'feBusy':>6} {'vs N=1':>12}")


def _row(p: Point, group: list[Point] | None, base: list[Point] | None = None) -> str:
    group = group or [p]
    rps = [q.rps for q in group]
    p99 = [q.p99_ms for q in group]
    vs = ""
    if base:
        vs = (f"{np.mean(rps) / np.mean([q.rps for q in base]):.2f}x req/s" if p.mode == "closed" else
              f"{np.mean([q.mean_batch for q in group]) / np.mean([q.mean_batch for q in base]):.2f}x batch")
    load = f"{int(p.load)}c" if p.mode == "closed" else f"{p.load:g}/s"

    def mean(key: str) -> float:
        return float(np.mean([getattr(q, key) for q in group]))

    return (f"{p.frontends:>2} {p.server_processes:>5} {f'{p.body} {p.body_bytes}B':<22} {load:>9} "
            f"{f'{min(rps):.0f}-{max(rps):.0f}':>15} {mean('p50_ms'):>6.2f} {f'{min(p99):.2f}-{max(p99):.2f}':>13} "
            f"{sum(q.errors for q in group):>4} {mean('mean_batch'):>6.1f} {mean('server_cpu_us'):>8.0f} "
            f"{mean('generator_cpu_us'):>8.0f} {mean('generator_busy'):>7.2f} {mean('engine_busy'):>6.2f} "
            f"{mean('frontend_busy'):>6.2f} {vs:>12}")


def _groups(points: list[Point]) -> dict[tuple[str, str, float, int], list[Point]]:
    """Repeats of one point together, ordered by body, mode, load, N."""
    groups: dict[tuple[str, str, float, int], list[Point]] = {}
    for p in sorted(points, key=lambda p: (p.body, p.mode, p.load, p.frontends)):
        groups.setdefault((p.body, p.mode, p.load, p.frontends), []).append(p)
    return groups


def table(points: list[Point]) -> list[str]:
    groups = _groups(points)
    return [HEADER, *(_row(g[0], g, groups.get((*key[:3], 1))) for key, g in groups.items())]


def targets(points: list[Point]) -> list[str]:
    """Issue 11's benchmark targets, for the points this run has (means over repeats)."""
    groups, lines = _groups(points), []

    def mean(key: tuple[str, str, float, int], attribute: str) -> float:
        return float(np.mean([getattr(p, attribute) for p in groups[key]]))

    for (body, mode, load, n), _ in groups.items():
        one = (body, mode, load, 1)
        if mode == "closed" and n == 1:
            if body not in N1_GOALS:
                continue
            goal: float = N1_GOALS[body]
            value, text = mean(one, "rps"), f"N=1 {body}: {mean(one, 'rps'):.0f} req/s (target >= {goal})"
        elif mode == "closed" and n == 8 and one in groups:
            value, goal = mean((body, mode, load, n), "rps") / mean(one, "rps"), 6
            text = f"N=8 {body}: {value:.2f}x N=1's req/s (target >= 6x)"
        elif mode == "open" and n > 1 and one in groups:
            value, goal = mean((body, mode, load, n), "mean_batch") / mean(one, "mean_batch"), 0.9
            text = f"N={n} {body} at {load:g}/s: mean batch {value:.2f}x N=1's (target >= 0.9x)"
        else:
            continue
        lines.append(f"  {'MET ' if value >= goal else 'MISS'}  {text}")
    return lines


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        return worker(json.loads(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frontends", type=lambda t: [int(v) for v in t.split(",")], default=[1, 2])
    parser.add_argument("--bodies", type=lambda t: t.split(","), default=DEFAULT_BODIES, help=", ".join(MODELS))
    parser.add_argument("--connections", type=int, default=64, help="closed loop, in all generator processes")
    parser.add_argument("--connections-per-frontend", type=int, default=0,
                        help="closed loop: at least this many connections per front end, so that a large N is "
                             "measured at capacity rather than at the latency a fixed client count allows")
    parser.add_argument("--equal-load", type=lambda t: t.split(","), default=[], metavar="RATE[,RATE]",
                        help="also open loop at these req/s for every N; '0.7x' = 0.7 x N=1's closed-loop req/s")
    parser.add_argument("--equal-load-policy", choices=["delay", "idle"], default="delay",
                        help="batching rule for the equal-load points: delay = dispatch_when_idle off (batches "
                             "form by max_queue_delay_ms: compares batch formation across N); idle = the default")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server-cores", help="taskset list for every server (default: 0..N, or 0 for N=1)")
    parser.add_argument("--generator-procs", type=int, help="default: one per core the server does not use")
    parser.add_argument("--base-ms", type=float, default=0.52)
    parser.add_argument("--per-row-ms", type=float, default=0.0077)
    parser.add_argument("--out", default="results/scaling.json")
    args = vars(parser.parse_args())
    out = Path(args.pop("out"))
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\n{HEADER}", flush=True)
    with tempfile.TemporaryDirectory(prefix="batchserve-scaling-") as tmp:
        points = measure(Plan(**args), Path(tmp), out)
    lines = [*table(points), "", "targets (issue 11):", *targets(points)]
    print("\n" + "\n".join(lines))
    document = json.loads(out.read_text())
    out.write_text(json.dumps({**document, "table": lines}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
