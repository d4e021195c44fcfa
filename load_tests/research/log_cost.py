"""What request lines cost: server CPU per request with the access log off, sampled and on, beside a
checkout without them (``--before``), all in one run, rounds interleaved so drift hits every setting alike.

    python -m load_tests.research.log_cost --before ../main --rounds 3 --duration 5

One server process pinned to --server-core serves the synthetic ``tabular`` model (128-byte V2 binary
rows, the H200's timings as load_tests/research/scaling.py has them); the lean generator, pinned to
--generator-core, drives it closed loop. Prints, per setting, the median over rounds of the server's CPU
per request and of its requests/s (docs/observability.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import generator
from ..harness.local_server import ROOT, LocalServer, machine, taskset
from ..harness.payloads import encode
from .scaling import write_repository


def measure(root: Path, repository: Path, work: Path, settings: dict[str, Any], args: argparse.Namespace
            ) -> tuple[float, float]:
    """(server CPU µs per request, requests/s) of one server from ``root`` with ``settings``."""
    server = LocalServer(repository, work / "server.log", core=args.server_core, root=root, poll_interval=0,
                         grpc_port=0, **settings).wait_ready()
    try:
        payload = encode("tabular", "v2_binary")
        request = work / "request.bin"
        request.write_bytes(generator.build_request(server.url + payload.path, payload.body, payload.content_type,
                                                    payload.headers))
        before = server.cpu_seconds()
        out = subprocess.run([*taskset(args.generator_core), sys.executable, "-m", "load_tests.generator",
                              "--url", server.url + payload.path, "--payload", str(request), "--mode", "closed",
                              "--concurrency", str(args.connections), "--duration", str(args.duration)],
                             capture_output=True, text=True, check=True, cwd=ROOT).stdout
        cpu = server.cpu_seconds() - before
        result = json.loads(out)
        assert result["errors"] == 0, result
        return cpu / max(1, result["completed_total"]) * 1e6, result["rps"]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout to compare with (its server, same settings)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-core", default="0")
    parser.add_argument("--generator-core", default="1")
    args = parser.parse_args()
    settings: dict[str, tuple[Path, dict[str, Any]]] = {}
    if args.before is not None:
        settings["before (no request lines)"] = (args.before.resolve(), {})
    settings |= {"access log off (sample 0)": (ROOT, {}),
                 "sample 0.01, JSON": (ROOT, {"access_log_sample": 0.01, "log_format": "json"}),
                 "sample 1, JSON": (ROOT, {"access_log_sample": 1, "log_format": "json"})}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    with tempfile.TemporaryDirectory(prefix="log-cost-") as tmp:
        repository = write_repository(Path(tmp) / "repository", 0.52, 0.0077)
        for round_ in range(args.rounds):
            for name, (root, values) in settings.items():
                results[name].append(measure(root, repository, Path(tmp), values, args))
                print(f"round {round_ + 1} {name}: {results[name][-1][0]:.1f} µs/request, "
                      f"{results[name][-1][1]:.0f} requests/s", file=sys.stderr)
    print(f"{machine()}; server on core {args.server_core}, generator on core {args.generator_core}, "
          f"{args.connections} connections, {args.rounds} rounds of {args.duration:g} s")
    print(f"{'setting':<28} {'CPU µs/request (median, all)':<40} requests/s (median)")
    for name, points in results.items():
        cpus = sorted(round(c, 1) for c, _ in points)
        print(f"{name:<28} {statistics.median(cpus):<8.1f} {cpus!s:<31} {statistics.median(r for _, r in points):.0f}")


if __name__ == "__main__":
    main()
