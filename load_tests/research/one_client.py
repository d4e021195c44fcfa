"""One-client latency of several checkouts of batchserve, measured in one run, points alternating.

One client over one keep-alive connection (closed loop) sends the same request again as each answer
arrives; the server is pinned to one core and the generator to another. Each ``--tree`` is a
directory holding a checkout (``git archive COMMIT | tar -x -C DIR`` makes one): its server is started
from there, so this compares releases, or a change against the tree before it, under the same load on
the same machine at the same time. Rounds alternate the trees so that drift of the machine hits all.

    python -m load_tests.research.one_client --tree before=/tmp/old --tree after=. --rounds 4
    python -m load_tests.research.one_client --model tabular --formats v2_binary --model-repository models
    python -m load_tests.research.one_client --synthetic 0.52 0.0077 --tree old=/tmp/old --tree new=.

Prints per tree and format: p50 and p99 (ms; the range over rounds and their median), requests/s and
the server's CPU per request (µs, from /proc). ``--floor`` adds the bare handler the benchmark compares
against (load_tests/harness/bare_handler.py): the least any server on this HTTP stack takes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..bench import BATCHING
from ..generator import build_request
from ..harness.local_server import ROOT, BareServer, LocalServer, free_port, machine, taskset
from ..harness.payloads import encode
from ..harness.synthetic import write_repository
from .scaling import process_tree

FLOOR = "(bare handler)"  # the tree of --floor: load_tests/harness/bare_handler.py, the floor under any server


class TreeServer(LocalServer):
    """``serve`` of the checkout at ``tree`` (whichever CLI module and flags that release has), pinned; waits
    and stops as LocalServer does."""

    def __init__(self, tree: Path, repository: Path, log: Path, core: str | None, frontends: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        module = "server.tools.cli" if (tree / "server" / "tools" / "cli.py").exists() else "server.cli"
        settings = (tree / "server" / "settings.py").read_text()
        args = [*taskset(core), sys.executable, "-m", module, "serve", "--model-repository", str(repository),
                "--host", "127.0.0.1", "--port", str(self.port), "--poll-interval", "0",
                "--tf-intra-op-threads", "1", "--tf-inter-op-threads", "1", "--default-timeout-ms", "5000",
                "--log-level", "warning"]
        if "grpc_port" in settings:
            args += ["--grpc-port", "0"]
        if frontends > 1:
            args += ["--frontends", str(frontends)]
        path = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])  # the tree's package first
        env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.client: dict[str, Any] = {}
        self.frontends = frontends
        self.log_path = log
        self._log = open(log, "wb")
        self.process = subprocess.Popen(args, cwd=tree, env=env, stdout=self._log, stderr=subprocess.STDOUT)


def point(server: LocalServer | BareServer, request: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [*taskset(args.generator_core), sys.executable, "-m", "load_tests.generator", "--url", server.url,
               "--payload", str(request), "--mode", "closed", "--concurrency", "1",
               "--warmup", str(args.warmup), "--duration", str(args.duration)]
    cpu = process_tree(server.process.pid)[0]  # with several front ends: all of the server's processes
    result: dict[str, Any] = json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                                       check=True).stdout)
    result["server_cpu_us"] = (process_tree(server.process.pid)[0] - cpu) / max(1, result["completed_total"]) * 1e6
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    trees = dict(spec.split("=", 1) if "=" in spec else (Path(spec).name, spec) for spec in args.tree)
    if args.floor:
        trees["bare"] = FLOOR
    source = Path(args.model_repository) / args.model / "1"
    if not args.synthetic and not (source / "saved_model.pb").exists():
        raise SystemExit(f"{source} has no SavedModel: run `batchserve demo-models {args.model_repository}` first")
    print(f"machine: {machine()}; server on core {args.server_core}, generator on core {args.generator_core}")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="one-client-") as tmp:
        work = Path(tmp)
        repository = work / "repository"
        if args.synthetic:  # the scaling benchmark's model: H200 timings, no TensorFlow
            write_repository(repository, *args.synthetic)
        else:
            (repository / args.model).mkdir(parents=True)
            (repository / args.model / "1").symlink_to(source.resolve())
            batching = BATCHING.get(args.model, {})  # as batchserve bench, batching on
            (repository / args.model / "model.yaml").write_text("".join(f"{k}: {v}\n" for k, v in batching.items()))
        for round_ in range(args.rounds):
            order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
            for name, tree in order:
                server: LocalServer | BareServer
                if tree == FLOOR:
                    server = BareServer([sys.executable, "-m", "load_tests.harness.bare_handler"], args.server_core,
                                        work / f"{name}-{round_}.log").wait_ready()
                else:
                    server = TreeServer(Path(tree).resolve(), repository, work / f"{name}-{round_}.log",
                                        args.server_core, args.frontends).wait_ready()
                try:
                    for fmt in args.formats:
                        payload = encode(args.model, fmt, timeout_us=5_000_000)
                        request = work / f"{fmt}.req"
                        request.write_bytes(build_request(server.url + payload.path, payload.body,
                                                          payload.content_type, payload.headers))
                        result = point(server, request, args)
                        results.append({"tree": name, "path": tree, "format": fmt, "round": round_, **result})
                        print(f"round {round_} {name:<12} {fmt:<14} p50 {result['p50_ms']:.3f} ms  "
                              f"p99 {result['p99_ms']:.3f} ms  {result['rps']:.0f} req/s  "
                              f"server {result['server_cpu_us']:.0f} µs/request", flush=True)
                finally:
                    server.stop()
    print(f"\n{'tree':<12} {'format':<14} {'p50 ms (range, median)':>26} {'p99 ms (range)':>16} {'req/s':>12} "
          f"{'srv µs/req':>11}")
    for name in trees:
        for fmt in args.formats:
            rows = [r for r in results if r["tree"] == name and r["format"] == fmt]
            p50, p99 = [r["p50_ms"] for r in rows], [r["p99_ms"] for r in rows]
            rps, cpu = [r["rps"] for r in rows], [r["server_cpu_us"] for r in rows]
            print(f"{name:<12} {fmt:<14} {f'{min(p50):.3f}-{max(p50):.3f}, {np.median(p50):.3f}':>26} "
                  f"{f'{min(p99):.2f}-{max(p99):.2f}':>16} {f'{min(rps):.0f}-{max(rps):.0f}':>12} "
                  f"{np.median(cpu):>11.0f}")
    return {"machine": machine(), "trees": trees, "model": args.model, "points": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=None,
                        help="NAME=DIR of a checkout to serve (repeat; default: this checkout)")
    parser.add_argument("--model", default="tabular")
    parser.add_argument("--model-repository", default=str(ROOT / "models"))
    parser.add_argument("--synthetic", nargs=2, type=float, metavar=("BASE_MS", "PER_ROW_MS"),
                        help="serve the synthetic model of the scaling benchmark (e.g. 0.52 0.0077) instead")
    parser.add_argument("--formats", type=lambda s: s.split(","), default=["v2_binary"])
    parser.add_argument("--rounds", type=int, default=4, help="each tree this many times, alternating")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--frontends", type=int, default=1, help="front-end processes of each server")
    parser.add_argument("--floor", action="store_true",
                        help="also the bare uvicorn handler (load_tests/harness/bare_handler.py) each round")
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--generator-core", default="1")
    parser.add_argument("--out", help="write every point as JSON here")
    args = parser.parse_args()
    args.tree = args.tree or [f"this={ROOT}"]
    if not shutil.which("taskset"):
        print("note: no taskset: nothing is pinned", file=sys.stderr)
    result = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
