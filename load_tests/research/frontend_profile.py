"""Where one front end's CPU goes per request: server CPU per request, split by stage from a py-spy profile.

    python -m load_tests.research.frontend_profile [--points tabular:v2_binary,image_classifier:v2_binary,
        tabular:tfserving_json] [--duration 8]

For each point: ``batchserve serve`` (one process, thread workers) on core 1 with a synthetic model at the
H200 timings (``base_ms: 0.52, per_row_ms: 0.0077``: it sleeps, as a GPU frees the CPU), the lean generator
on core 0, 64 closed-loop connections. Server CPU per request comes from /proc; ``py-spy record --gil`` samples
only the thread holding the GIL, so a stage's share of samples is its share of the Python work, and
share x CPU per request is its µs (time outside the GIL, the write syscall's kernel side for one, lands in
"event loop"). Needs py-spy (the dev extra). Before against after, in one run, without py-spy:

    python -m load_tests.research.frontend_profile --tree before=/tmp/old --tree after=. --points tabular:v2_binary \
        --duration 6 --rounds 4

(``git archive COMMIT | tar -x -C /tmp/old`` makes a checkout; an older one needs this file copied into it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from .. import generator
from ..harness.local_server import ROOT, LocalServer, machine, taskset
from ..harness.payloads import encode
from .scaling import write_repository

# The first rule matching a frame, from the innermost frame out, names its sample's stage.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("model thread", ("server/runtime/synthetic.py", "server/runtime/instance_thread.py:_serve", "_timed_run")),
    ("encode", ("encode_response", "encode_predict", "_HttpCodec.encode", "encode_tensor", "jsonio.py:dumps")),
    ("decode", ("decode_request", "decode_predict", "_HttpCodec.decode", "split_body", "decode_tensor",
                "jsonio.py:loads")),
    ("validate", ("validate_inputs", "served_signature", "check_names")),
    ("accounting", ("_account", "server/observability/")),
    ("batcher", ("batching/",)),
    ("admission", ("server/admission/",)),
    ("service", ("server/core/", "server/models/catalog.py")),
    ("HTTP", ("server/http/", "uvicorn/", "httptools")),
]


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needles in STAGES:
            if any(_matches(frame, needle) for needle in needles):
                return stage
    return "event loop"


def _matches(frame: str, needle: str) -> bool:
    """``frame`` is py-spy's ``function (path:line)``; a needle is a path part, ``path:function`` or a function."""
    function, _, where = frame.partition(" (")
    if ":" in needle and not needle.endswith("/"):
        path, name = needle.split(":")
        return path in where and function.endswith(name)
    return needle in where or function.endswith(needle)


def stages(profile: Path) -> dict[str, float]:
    """Share of GIL-holding samples per stage."""
    counts: Counter[str] = Counter()
    for line in profile.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[stage_of(stack.split(";"))] += int(n)
    total = sum(counts.values()) or 1
    return {stage: counts[stage] / total for stage in [s for s, _ in STAGES] + ["event loop"]}


def measure(model: str, fmt: str, duration: float, work: Path, profiled: bool = True, warmup: float = 0.0
            ) -> dict[str, object]:
    repository = write_repository(work / "repository", 0.52, 0.0077)
    server = LocalServer(repository, work / f"{model}-{fmt}.log", core="1", poll_interval=0)
    try:
        server.wait_ready()
        payload = encode(model, fmt)
        request = work / "request.bin"
        request.write_bytes(generator.build_request(f"{server.url}{payload.path}", payload.body,
                                                    payload.content_type, payload.headers))

        def load(seconds: float) -> subprocess.CompletedProcess[str]:
            return subprocess.run([*taskset("0"), sys.executable, "-m", "load_tests.generator", "--url",
                                   f"{server.url}{payload.path}", "--payload", str(request), "--mode", "closed",
                                   "--concurrency", "64", "--warmup", "0", "--duration", str(seconds)],
                                  cwd=ROOT, capture_output=True, text=True, check=True)

        if warmup > 0:
            load(warmup)
        profile = work / f"{model}-{fmt}.txt"
        profile.unlink(missing_ok=True)
        spy = None
        if profiled:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            spy = subprocess.Popen([py_spy, "record", "--gil", "--nonblocking", "-r", "499",
                                    "-d", str(int(duration)), "-f", "raw", "-o", str(profile), "-p",
                                    str(server.process.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before, rows = server.cpu_seconds(), server.batch_totals(model)
        run = load(duration)
        cpu = server.cpu_seconds() - before
        after = server.batch_totals(model)
        if spy is not None:
            spy.wait()
        result = json.loads(run.stdout)
        completed = int(result["completed_total"])
        per_request = cpu / max(1, completed) * 1e6
        shares = stages(profile) if profile.exists() else {}
        return {"model": model, "format": fmt, "body_bytes": len(payload.body), "rps": result["rps"],
                "errors": result.get("errors"), "server_cpu_us": per_request,
                "mean_batch": (after[0] - rows[0]) / max(1.0, after[1] - rows[1]),
                "stages_us": {stage: share * per_request for stage, share in shares.items()}}
    finally:
        server.stop()


def compare(trees: list[str], points: str, duration: float, rounds: int) -> None:
    """Each tree's server (``NAME=DIR``, a checkout) at each point, the trees alternating ``rounds`` times in
    one run, without py-spy: CPU a request and requests/s, before against after on the same machine."""
    for round_ in range(rounds):
        for tree in trees:
            name, _, folder = tree.partition("=")
            run = subprocess.run([sys.executable, "-m", "load_tests.research.frontend_profile", "--points", points,
                                  "--duration", str(duration), "--no-profile", "--warmup", "2"],
                                 cwd=folder, env={**os.environ, "PYTHONPATH": str(Path(folder).resolve())},
                                 capture_output=True, text=True, check=True)
            for line in run.stdout.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    point = f"{row['model']}:{row['format']}"
                    print(f"round {round_} {name:10s} {point:28s} {row['server_cpu_us']:6.1f} µs a request  "
                          f"{row['rps']:8.0f} req/s  mean batch {row['mean_batch']:5.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", default="tabular:v2_binary,image_classifier:v2_binary,tabular:tfserving_json")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--no-profile", action="store_true", help="CPU a request only, without py-spy")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds of the same load before measuring")
    parser.add_argument("--tree", action="append", default=None,
                        help="NAME=DIR: compare checkouts, alternating (implies --no-profile)")
    parser.add_argument("--rounds", type=int, default=4, help="with --tree: each tree this many times")
    args = parser.parse_args()
    print(f"# {machine()}; server from {ROOT}", flush=True)
    if args.tree:
        compare(args.tree, args.points, args.duration, args.rounds)
        return
    with tempfile.TemporaryDirectory() as scratch:
        for point in args.points.split(","):
            model, fmt = point.split(":")
            row = measure(model, fmt, args.duration, Path(scratch), not args.no_profile, args.warmup)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
