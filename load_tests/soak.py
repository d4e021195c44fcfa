"""Soak: mixed traffic for a while, and every server process sampled for growth.

Drives all demo models over both protocols (V2 binary, V2 JSON, TF Serving JSON)
with a share of bad requests, from a bounded number of concurrent clients on
127.0.0.1. Every ``interval`` seconds it samples, for each server process
(supervisor or single process, engine, front ends, model workers), its resident
memory, open file descriptors and threads from its ``process_*`` series in
/metrics, and the shared-memory segments the processes map in /dev/shm (from
/proc: no series counts them). Afterwards it fits a least-squares line to each total over the run
after its first quarter (start-up, warm caches) and fails on sustained growth:
a slope above the threshold in ``THRESHOLDS`` (per minute). Traffic must come
back right too: every good request 200, every bad one a 4xx, no transport error.

    python -m load_tests.soak --model-repository models --duration 600 --frontends 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from .harness.local_server import LocalServer
from .harness.payloads import BAD_BODIES, FORMATS, encode

MODELS = ("tabular", "image_classifier", "spam")
BAD_SHARE = 0.1
# Sustained growth allowed, per minute, of each total over all server processes.
THRESHOLDS = {"rss_mib": 2.0, "fds": 1.0, "threads": 0.5, "shm_segments": 0.2, "shm_mib": 1.0}
# The one-minute run in `make test`: allocators and arenas still settle in its first minute, so it
# catches only gross leaks; at its ~250 requests/s, a leak of 4 KB a request is 60 MiB/min.
SMOKE_THRESHOLDS = {"rss_mib": 50.0, "fds": 10.0, "threads": 4.0, "shm_segments": 2.0, "shm_mib": 16.0}
SHM = Path("/dev/shm")


@dataclass
class Sample:
    seconds: float  # since the traffic started
    processes: dict[str, dict[str, float]]  # "role index" -> rss_mib, fds, threads, started
    shm_segments: int
    shm_mib: float

    def total(self, key: str) -> float:
        if key.startswith("shm_"):
            return float(getattr(self, key))
        return sum(p[key] for p in self.processes.values())


@dataclass
class SoakResult:
    duration: float
    interval: float
    samples: list[Sample] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    slopes: dict[str, float] = field(default_factory=dict)  # per minute
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


PROCESS_SERIES = {"process_resident_memory_bytes": ("rss_mib", 2**-20), "process_open_fds": ("fds", 1.0),
                  "process_threads": ("threads", 1.0), "process_start_time_seconds": ("started", 1.0)}


def process_series(url: str) -> dict[str, dict[str, float]]:
    """Every server process's resident memory, open fds, threads and start time, from its ``process_*``
    series in /metrics (docs/observability.md), keyed "role index"."""
    processes: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name in PROCESS_SERIES:
                key, scale = PROCESS_SERIES[sample.name]
                process = f"{sample.labels['role']} {sample.labels['index']}"
                processes.setdefault(process, {})[key] = sample.value * scale
    return processes


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids += _tree(int(child))
    return pids


def _mapped_shm(pid: int) -> set[str]:
    """The /dev/shm files this process has mapped (its own segments, whoever else runs)."""
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        _, _, path = line.partition("/dev/shm/")
        if path:
            paths.add(path.removesuffix(" (deleted)"))
    return paths


def sample(url: str, server_pid: int, since: float) -> Sample:
    """The process series of every server process, and the shared memory they map (which no series shows)."""
    processes = process_series(url)
    segments: set[str] = set()
    for pid in _tree(server_pid):
        try:
            segments |= _mapped_shm(pid)
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between listing and reading
    mib = 0.0
    for name in segments:
        try:
            mib += (SHM / name).stat().st_blocks * 512 / 2**20
        except FileNotFoundError:
            pass
    return Sample(round(time.monotonic() - since, 1), processes, len(segments), mib)


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 3:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def judge(result: SoakResult, thresholds: dict[str, float]) -> None:
    """Slopes over the samples after the first quarter; a failure for each one above its threshold."""
    settled = [s for s in result.samples if s.seconds >= result.duration / 4]
    for key, limit in thresholds.items():
        slope = slope_per_minute([(s.seconds, s.total(key)) for s in settled])
        result.slopes[key] = slope
        if slope > limit:
            result.failures.append(f"{key} grows {slope:.2f}/min over the run after its first quarter "
                                   f"(threshold {limit}/min)")
    roles = [{k.split()[0] for k in s.processes} for s in result.samples]
    if roles and any(r != roles[0] for r in roles):
        result.failures.append("the set of server processes changed during the soak (a restart?)")
    starts = [{k: p.get("started") for k, p in s.processes.items()} for s in result.samples]
    if starts and any(p != starts[0] for p in starts):
        result.failures.append("a server process was replaced during the soak")
    good = sum(n for k, n in result.outcomes.items() if k.startswith("good "))
    if result.outcomes["good 200"] != good:
        result.failures.append(f"good requests not answered 200: {dict(result.outcomes)}")
    bad = {k: n for k, n in result.outcomes.items() if k.startswith("bad ") and not k.startswith("bad 4")}
    if bad:
        result.failures.append(f"bad requests not answered 4xx: {bad}")
    errors = {k: n for k, n in result.outcomes.items() if k.startswith("transport")}
    if errors:
        result.failures.append(f"transport errors: {errors}")


async def traffic(url: str, duration: float, clients: int, outcomes: Counter[str], seed: int = 0) -> None:
    """``clients`` closed-loop clients for ``duration`` seconds: good requests of every model and format,
    and ``BAD_SHARE`` of bad ones."""
    payloads = [encode(model, fmt, rows=rows, seed=seed) for model in MODELS for fmt in FORMATS for rows in (1, 3)]
    end = time.monotonic() + duration

    async def client(index: int) -> None:
        rng = random.Random(seed + index)
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            while time.monotonic() < end:
                bad = rng.random() < BAD_SHARE
                try:
                    if bad:
                        path, body = rng.choice(BAD_BODIES)
                        response = await http.post(path, content=body, headers={"Content-Type": "application/json"})
                    else:
                        payload = rng.choice(payloads)
                        response = await http.post(payload.path, content=payload.body,
                                                   headers={"Content-Type": payload.content_type, **payload.headers})
                    outcomes[f"{'bad' if bad else 'good'} {response.status_code}"] += 1
                except httpx.HTTPError as error:
                    outcomes[f"transport {type(error).__name__}"] += 1

    await asyncio.gather(*(client(i) for i in range(clients)))


def soak(repository: Path, duration: float, interval: float, clients: int = 8,
         thresholds: dict[str, float] | None = None, log_dir: Path | None = None, **settings: Any) -> SoakResult:
    """Start a server on ``repository``, drive it for ``duration`` seconds, sample it, judge it, stop it."""
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="soak-"))
    server = LocalServer(repository, log_dir / "server.log", poll_interval=0, **settings).wait_ready()
    result = SoakResult(duration, interval)
    try:
        started = time.monotonic()
        stop = threading.Event()

        def sampler() -> None:
            while True:
                result.samples.append(sample(server.url, server.process.pid, started))
                if stop.wait(interval):
                    return

        thread = threading.Thread(target=sampler, name="soak-sampler", daemon=True)
        thread.start()
        asyncio.run(traffic(server.url, duration, clients, result.outcomes))
        stop.set()
        thread.join()
    finally:
        server.stop()
    judge(result, thresholds or THRESHOLDS)
    return result


def table(result: SoakResult) -> str:
    """One line per sample: seconds, RSS by role, fds, threads, shared memory."""
    roles = sorted({k.split()[0] for s in result.samples for k in s.processes})
    head = ["s"] + [f"rss_{r}" for r in roles] + ["rss_total", "fds", "threads", "shm_n", "shm_mib"]
    lines = ["\t".join(head)]
    for s in result.samples:
        by_role = {r: sum(p["rss_mib"] for k, p in s.processes.items() if k.startswith(r + " ")) for r in roles}
        cells = [f"{s.seconds:.0f}"] + [f"{by_role[r]:.1f}" for r in roles] + [
            f"{s.total('rss_mib'):.1f}", f"{s.total('fds'):.0f}", f"{s.total('threads'):.0f}",
            str(s.shm_segments), f"{s.shm_mib:.1f}"]
        lines.append("\t".join(cells))
    return "\n".join(lines)


def plot(result: SoakResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.seconds / 60 for s in result.samples]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, ax in zip(("rss_mib", "fds", "threads"), axes):
        ax.plot(minutes, [s.total(key) for s in result.samples])
        ax.set_xlabel("minutes")
        ax.set_title(f"{key} (all server processes); slope {result.slopes.get(key, 0):+.2f}/min")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=Path("models"))
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--frontends", default="2")
    parser.add_argument("--workers", default="thread", choices=("thread", "process"))
    parser.add_argument("--out", type=Path, default=Path("results"), help="folder for the JSON and the plot")
    args = parser.parse_args()
    result = soak(args.model_repository, args.duration, args.interval, args.clients,
                  frontends=args.frontends, workers=args.workers)
    print(table(result))
    print("requests:", dict(sorted(result.outcomes.items())))
    print("slopes per minute:", {k: round(v, 3) for k, v in result.slopes.items()}, "thresholds:", THRESHOLDS)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (args.out / f"soak-{stamp}.json").write_text(json.dumps(
        {**asdict(result), "outcomes": dict(result.outcomes), "ok": result.ok}, indent=1))
    plot(result, args.out / f"soak-{stamp}.png")
    print(f"wrote {args.out}/soak-{stamp}.json and .png")
    if not result.ok:
        print("SOAK FAILED:\n  " + "\n  ".join(result.failures))
        sys.exit(1)
    print("soak passed")


if __name__ == "__main__":
    main()
