"""batchserve bench: the server's throughput and latency beside the raw limit of the same model, in one run.

For each model: measure the raw in-process limit per batch size (pinned to one
core, with the best TensorFlow thread setting for it); start the server with
batching on, then off (max_batch_size 1); drive it closed-loop at several
concurrencies and open-loop (Poisson) at fractions of the best closed-loop
rate, in each wire format; pinned (server on core 0, generator on core 1) and
unpinned. Validation, metrics and deadlines stay on. Prints one table, checks
the targets, and writes JSON and a PNG plot.

First, the floor (load_tests/harness/floor.py): one batchserve front end beside a
bare uvicorn handler in the same run, same generator and pinning, for 110 KB,
27 KB (uint8), JPEG and 128 B binary V2 bodies against a synthetic model (no
TensorFlow): requests/s and server CPU per request of both, and their ratio.

    batchserve bench --models image_classifier,tabular [--quick]
    batchserve bench --floor-only --quick         # the floor alone, about a minute
    batchserve bench --models image_classifier,image_uint8,image_jpeg --formats v2_binary --pinned-only
    python -m load_tests.bench --help
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .generator import build_request
from .harness.floor import floor_summaries, floor_table, floor_targets, measure_floor
from .harness.local_server import ROOT, LocalServer, machine, taskset
from .harness.payloads import BINARY_ONLY, FORMATS, encode

BATCHING = {  # model -> model.yaml with batching on
    "image_classifier": {"max_batch_size": 32, "max_queue_delay_ms": 5},
    "image_uint8": {"max_batch_size": 32, "max_queue_delay_ms": 5},
    "image_jpeg": {"max_batch_size": 32, "max_queue_delay_ms": 5},
    "tabular": {"max_batch_size": 128, "max_queue_delay_ms": 1},
    "spam": {"max_batch_size": 64, "max_queue_delay_ms": 2},
}
THREAD_SETTINGS = [(1, 1), (0, 0)]  # (intra, inter) tried for the one-core raw limit


@dataclass
class Point:
    model: str
    pinned: bool
    batching: str
    fmt: str
    mode: str
    load: float
    rps: float
    rows_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    mean_batch: float
    server_cpu_us: float
    generator_cpu_us: float
    pct_of_limit: float


def raw_limit(path: Path, sizes: list[int], pinned: bool, seconds: float, model: str) -> dict[str, Any]:
    """Best rows/s over batch sizes, for the best thread setting (pinned) or TF's default (unpinned)."""
    settings = THREAD_SETTINGS if pinned else [(0, 0)]
    results = []
    for intra, inter in settings:
        command = [*taskset("0" if pinned else None), sys.executable, "-m", "load_tests.harness.raw_limit", str(path),
                   "--batch-sizes", ",".join(map(str, sizes)), "--intra", str(intra), "--inter", str(inter),
                   "--seconds", str(seconds), "--model", model]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
        results.append(json.loads(out))
    return max(results, key=lambda r: r["best"]["rows_per_s"])


def drive(server: LocalServer, model: str, payload_file: Path, pinned: bool, mode: str, load: float,
          warmup: float, duration: float) -> dict[str, Any]:
    command = [*taskset("1" if pinned else None), sys.executable, "-m", "load_tests.generator",
               "--url", server.url, "--payload", str(payload_file), "--mode", mode,
               "--warmup", str(warmup), "--duration", str(duration)]
    command += ["--concurrency", str(int(load))] if mode == "closed" else ["--rate", str(load)]
    cpu, batches = server.cpu_seconds(), server.batch_totals(model)
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = json.loads(out)
    cpu = server.cpu_seconds() - cpu
    after = server.batch_totals(model)
    result["mean_batch"] = (after[0] - batches[0]) / max(1.0, after[1] - batches[1])
    result["server_cpu_us"] = cpu / max(1, result["completed_total"]) * 1e6
    return result


def bench_model(model: str, args: argparse.Namespace, workdir: Path) -> tuple[list[Point], dict[str, Any]]:
    source = Path(args.model_repository) / model / "1"
    if not (source / "saved_model.pb").exists():
        raise SystemExit(f"{source} has no SavedModel: run `batchserve demo-models {args.model_repository}` first")
    config = BATCHING.get(model, {"max_batch_size": 32, "max_queue_delay_ms": 2})
    sizes = sorted({1, 2, 4, 8, 16, 32, config["max_batch_size"]} & set(range(1, config["max_batch_size"] + 1)))
    limits = {pinned: raw_limit(source, sizes, pinned, args.raw_seconds, model) for pinned in args.pinning}
    points: list[Point] = []
    for pinned in args.pinning:
        limit = limits[pinned]
        threads = (limit["intra"], limit["inter"])
        for batching in ("on", "off"):
            repo = workdir / f"{model}-{batching}"
            shutil.rmtree(repo, ignore_errors=True)
            (repo / model).mkdir(parents=True)
            (repo / model / "1").symlink_to(source.resolve())
            yaml = dict(config) if batching == "on" else {"max_batch_size": 1}
            (repo / model / "model.yaml").write_text("".join(f"{k}: {v}\n" for k, v in yaml.items()))
            server = LocalServer(repo, workdir / f"server-{model}-{batching}-{pinned}.log",
                                 core="0" if pinned else None, poll_interval=0, tf_intra_op_threads=threads[0],
                                 tf_inter_op_threads=threads[1], default_timeout_ms=5000,
                                 log_level="warning").wait_ready()
            try:
                for fmt in args.formats:
                    if fmt == "v2_json" and model in BINARY_ONLY:
                        continue
                    payload = encode(model, fmt, timeout_us=5_000_000)
                    payload_file = workdir / f"{model}-{fmt}.req"
                    payload_file.write_bytes(build_request(server.url + payload.path, payload.body,
                                                           payload.content_type, payload.headers))
                    closed = []
                    for concurrency in args.concurrency:
                        result = drive(server, model, payload_file, pinned, "closed", concurrency,
                                       args.warmup, args.duration)
                        closed.append(result["rps"])
                        points.append(_point(model, pinned, batching, fmt, "closed", concurrency, result, limit))
                        _print(points[-1])
                    for fraction in args.rates:
                        rate = round(max(closed) * fraction, 1)
                        result = drive(server, model, payload_file, pinned, "open", rate, args.warmup, args.duration)
                        points.append(_point(model, pinned, batching, fmt, "open", rate, result, limit))
                        _print(points[-1])
            finally:
                server.stop()
    return points, {("pinned" if k else "unpinned"): v for k, v in limits.items()}


def _point(model: str, pinned: bool, batching: str, fmt: str, mode: str, load: float, r: dict[str, Any],
           limit: dict[str, Any]) -> Point:
    return Point(model, pinned, batching, fmt, mode, load, r["rps"], r["rps"], r["p50_ms"], r["p95_ms"],
                 r["p99_ms"], r["errors"], r["mean_batch"], r["server_cpu_us"], r["generator_cpu_us_per_request"],
                 100.0 * r["rps"] / limit["best"]["rows_per_s"])


HEADER = (f"{'model':<16} {'pin':<5} {'batch':<5} {'format':<14} {'mode':<6} {'load':>7} {'req/s':>8} {'rows/s':>8} "
          f"{'p50ms':>7} {'p95ms':>7} {'p99ms':>8} {'err':>5} {'mbatch':>6} {'srvCPUus':>8} {'genCPUus':>8} "
          f"{'%limit':>6}")


def _row(p: Point) -> str:
    load = f"{int(p.load)}c" if p.mode == "closed" else f"{p.load:g}/s"
    return (f"{p.model:<16} {'yes' if p.pinned else 'no':<5} {p.batching:<5} {p.fmt:<14} {p.mode:<6} {load:>7} "
            f"{p.rps:>8.0f} {p.rows_s:>8.0f} {p.p50_ms:>7.2f} {p.p95_ms:>7.2f} {p.p99_ms:>8.2f} {p.errors:>5} "
            f"{p.mean_batch:>6.1f} {p.server_cpu_us:>8.0f} {p.generator_cpu_us:>8.0f} {p.pct_of_limit:>6.1f}")


def _print(point: Point) -> None:
    print(_row(point), flush=True)


def check_targets(points: list[Point], limits: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, pinned, 64 clients: met or missed, and by how much."""

    def find(model: str, fmt: str, batching: str = "on", load: float = 64) -> Point | None:
        return next((p for p in points if p.model == model and p.fmt == fmt and p.batching == batching
                     and p.pinned and p.mode == "closed" and p.load == load), None)

    lines = []

    def verdict(name: str, value: float | None, target: float, unit: str, higher: bool = True) -> None:
        if value is None:
            lines.append(f"  n/a   {name}: not measured in this run")
            return
        met = value >= target if higher else value <= target
        lines.append(f"  {'MET ' if met else 'MISS'}  {name}: {value:.1f}{unit} (target {'>=' if higher else '<='} "
                     f"{target:g}{unit}{'' if met else f', off by {abs(value - target):.1f}{unit}'})")

    image = find("image_classifier", "v2_binary")
    verdict("image_classifier V2 binary, % of one-core raw limit", image.pct_of_limit if image else None, 95, "%")
    off = find("image_classifier", "v2_binary", "off")
    verdict("image_classifier V2 binary, batching on / off", image.rps / off.rps if image and off else None, 4, "x")
    json_point = find("image_classifier", "v2_json")
    verdict("image_classifier V2 JSON, requests/s", json_point.rps if json_point else None, 250, "")
    tab_bin, tab_json = find("tabular", "v2_binary"), find("tabular", "v2_json")
    verdict("tabular V2 binary, requests/s", tab_bin.rps if tab_bin else None, 7000, "")
    verdict("tabular V2 JSON, requests/s", tab_json.rps if tab_json else None, 5500, "")
    for model in ("image_classifier", "tabular"):
        one = find(model, "v2_binary", load=1)
        raw = limits.get(model, {}).get("pinned")
        if one and raw:
            batch1 = next(r for r in raw["by_batch_size"] if r["batch_size"] == 1)
            verdict(f"{model} 1 client, p50 over raw batch-1 latency", one.p50_ms - batch1["p50_ms"], 1.0, " ms",
                    higher=False)
    return lines


def plot(points: list[Point], limits: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({p.model for p in points})
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4.2 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        throughput, latency = axes[row]
        for (fmt, batching, pinned), style in _series(points, model):
            closed = sorted((p for p in points if (p.model, p.fmt, p.batching, p.pinned, p.mode)
                             == (model, fmt, batching, pinned, "closed")), key=lambda p: p.load)
            opened = sorted((p for p in points if (p.model, p.fmt, p.batching, p.pinned, p.mode)
                             == (model, fmt, batching, pinned, "open")), key=lambda p: p.load)
            label = f"{fmt} batching {batching}{'' if pinned else ' unpinned'}"
            throughput.plot([p.load for p in closed], [p.rows_s for p in closed], label=label, **style)
            latency.plot([p.load for p in opened], [p.p99_ms for p in opened], label=label, **style)
        limit = limits[model].get("pinned") or next(iter(limits[model].values()))
        throughput.axhline(limit["best"]["rows_per_s"], color="black", linestyle="--",
                           label=f"raw limit, 1 core (batch {limit['best']['batch_size']})")
        throughput.set(xscale="log", yscale="log", xlabel="concurrent clients (closed loop)", ylabel="rows/s",
                       title=f"{model}: throughput")
        latency.set(xscale="log", yscale="log", xlabel="offered requests/s (open loop, Poisson)",
                    ylabel="p99 latency (ms)", title=f"{model}: p99 vs offered load")
        throughput.legend(fontsize=7)
        latency.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


_COLORS = {"v2_binary": "tab:blue", "v2_json": "tab:orange", "tfserving_json": "tab:green"}


def _series(points: list[Point], model: str) -> list[tuple[tuple[str, str, bool], dict[str, str]]]:
    """One line per (format, batching, pinning): colour by format, marker and dash by the rest."""
    keys = sorted({(p.fmt, p.batching, p.pinned) for p in points if p.model == model})
    return [(key, {"color": _COLORS.get(key[0], "gray"), "marker": "o" if key[1] == "on" else "x",
                   "linestyle": "-" if key[2] else "--"} if key[1] == "on" else
             {"color": _COLORS.get(key[0], "gray"), "marker": "x", "linestyle": ":" if key[2] else "-."})
            for key in keys]


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.concurrency, args.rates, args.duration, args.warmup = [1, 64], [0.5, 1.1], 2.0, 0.5
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    all_points: list[Point] = []
    limits: dict[str, dict[str, Any]] = {}
    print(f"machine: {machine()}")
    floor: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="batchserve-bench-") as tmp:
        if args.floor:
            print(f"floor: one front end beside the bare handler, {'pinned' if True in args.pinning else 'unpinned'}")
            floor = measure_floor(Path(tmp), True in args.pinning, args.warmup, args.duration,
                                  1 if args.quick else 2)
            print("\n".join(["", *floor_table(floor), "", "floor targets:", *floor_targets(floor), ""]), flush=True)
        if args.floor_only:
            args.models = []
        else:
            print(HEADER)
        for model in args.models:
            points, limits[model] = bench_model(model, args, Path(tmp))
            all_points += points
            for kind, limit in limits[model].items():
                best = limit["best"]
                print(f"  raw limit {model} ({kind}, intra={limit['intra']} inter={limit['inter']}): "
                      f"{best['rows_per_s']:.0f} rows/s at batch {best['batch_size']}; batch 1: "
                      f"{limit['by_batch_size'][0]['p50_ms']:.2f} ms")
    targets: list[str] = []
    if all_points:
        print("\n" + HEADER)
        for point in all_points:
            print(_row(point))
        print("\ntargets (pinned, 64 clients, validation + metrics + deadlines on):")
        targets = check_targets(all_points, limits)
        print("\n".join(targets))
    if floor:
        print("\nfloor (one front end beside the bare handler, binary V2; conn: closed-loop connections):")
        print("\n".join([*floor_table(floor), *floor_targets(floor)]))
    document = {"machine": machine(), "argv": sys.argv, "limits": limits, "targets": targets,
                "points": [asdict(p) for p in all_points],
                "floor": {"points": [asdict(p) for p in floor], "summary": floor_summaries(floor),
                          "targets": floor_targets(floor) if floor else []}}
    (out / "bench.json").write_text(json.dumps(document, indent=1))
    if all_points:
        plot(all_points, limits, out / "bench.png")
    print(f"\nwrote {out / 'bench.json'}" + (f" and {out / 'bench.png'}" if all_points else ""))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    def ints(text: str) -> list[int]:
        return [int(v) for v in text.split(",")]

    def floats(text: str) -> list[float]:
        return [float(v) for v in text.split(",")]

    parser.add_argument("--model-repository", default="models", help="where the demo models are built")
    parser.add_argument("--models", type=lambda t: t.split(","), default=["image_classifier", "tabular"])
    parser.add_argument("--formats", type=lambda t: t.split(","), default=list(FORMATS))
    parser.add_argument("--concurrency", type=ints, default=[1, 8, 64], help="closed-loop clients")
    parser.add_argument("--rates", type=floats, default=[0.5, 0.9, 1.2],
                        help="open-loop offered rates, as fractions of the best closed-loop rate")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before measuring")
    parser.add_argument("--raw-seconds", type=float, default=1.5, help="seconds per batch size for the raw limit")
    parser.add_argument("--unpinned", dest="pinning", action="store_const", const=[True, False], default=[True, False])
    parser.add_argument("--pinned-only", dest="pinning", action="store_const", const=[True])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter points (a smoke run)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the floor (one front end beside a bare handler, synthetic model)")
    parser.add_argument("--floor-only", action="store_true", help="only the floor (no TensorFlow, no models)")
    parser.add_argument("--output", default="results/bench")


def add_bench_command(commands: Any) -> None:
    parser = commands.add_parser("bench", help="benchmark the server against the raw limit of the same model",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(run=run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    main()
