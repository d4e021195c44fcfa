"""Benchmark: what one refused request costs the server's CPU, beside the least any server pays for it.

Refusing is only worth as much as it saves: with a refusal costing r of server CPU and an
answer c, a core offered L times its capacity answers at most (1 - L*r/c) / (1 - r/c) of that
capacity (docs/scheduling.md#front-end-overload), nothing once L reaches c/r. Under open-loop
load a batchserve refusal costs about a third of an answer, which leaves little goodput at 2x.
How much of that is batchserve's own, and how much any server pays to read a request from
loopback TCP and write an answer? Four servers, each alone on core 0, get the same open-loop
Poisson load (``python -m load_tests.generator --mode open``, as slo_bench's ``point``, on core 1) at
the same offered rates, and each is charged the CPU it used (``/proc/PID/stat`` utime + stime, its
threads included, children not) over the point, per request:

- ``c``: ``load_tests/research/refusal_floor.c``, built with ``cc -O2`` at run time (skipped without a C
  compiler): epoll, one thread, frames requests by Content-Length, answers a canned 503. About
  the least any server on this machine pays per request.
- ``uvloop``: the same in Python (``bare_refuser.BareRefuser``, an asyncio.Protocol on uvloop when it can be
  imported, else asyncio's loop; ``python -m load_tests.research.bare_refuser PORT``). The
  least a Python event-loop server pays.
- ``refuse``: batchserve serving ``tabular`` (scheduling slo), refusing every request through its
  real overload path: the headers parsed, ``_route`` reads the loop's lag, ``overloaded`` counts
  the refusal, the body is read and dropped, the cached 503 written. No setting makes it refuse
  everything: below 2 ms of loop lag (``server/admission/overload.py`` FLOOR) nothing is refused whatever
  the SLO, and a server refusing at this cost catches up below it, so it answers part of the
  load. The run therefore writes a sitecustomize.py, put on that server's PYTHONPATH only, that
  makes ``LoopLag.behind`` report 1 s (``SITECUSTOMIZE`` says exactly what it patches); every
  answer is checked to be a 503 and counted as ``overloaded`` in /metrics.
- ``answer``: the same server with scheduling fixed: every request answered (200), which gives
  c, so each r/c above comes from the same run.

Per point: offered rate, requests, 503s, 200s, server CPU in cores (CPU seconds over the
point's wall time, from the generator's start to its last answer: a saturated server shows
under 1), CPU us per request, and the generator's send lag p99 (over 50 ms, it was starved by
other work: the point runs again, twice at most, the least disturbed kept; "runs" says how many
ran). ``answer`` runs once: saturated, it holds all 1024 of the generator's connections, and the
lag is the wait for one (seconds at 2x). Then, per rate, r/c of ``refuse``, ``uvloop`` and ``c``
and the goodput bound it allows at 1.3x and 2.0x load. Requests count from the first (no
warm-up): the CPU window holds all of them.

    python -m load_tests.research.refusal_floor             # ~1.5 minutes on 2 cores
    python -m load_tests.research.refusal_floor --kinds refuse,answer --rates 8000 --out /tmp/floor.json

Everything it starts (servers, the built binary, temporary files) is gone when it ends,
on errors and Ctrl-C too. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx

from ..generator import build_request
from ..harness.local_server import ROOT, BareServer, LocalServer, Server, cpu_seconds, taskset
from ..harness.payloads import encode
from .bare_refuser import build_c
from .slo_bench import MAX_LAG_MS, batch_totals, open_loop_command

KINDS = ("c", "uvloop", "refuse", "answer")
FLOORS = ("refuse", "uvloop", "c")  # compared with ``answer``
LOADS = (1.3, 2.0)  # offered load (x capacity) for the goodput bound
MODEL = "tabular"
MODEL_YAML = "max_batch_size: 128\nmax_queue_delay_ms: 1\nslo_ms: 25\n"  # the demo model's (slo_bench BATCHING)
SLO = 0.025
SERVER_CORE, GENERATOR_CORE = "0", "1"
SITECUSTOMIZE = '''\
"""Written by load_tests/research/refusal_floor.py into a temporary directory on the PYTHONPATH of its
``refuse`` server only (never installed, gone after the run).

It patches one method: server.admission.overload.LoopLag.behind, which tells the HTTP front end how far
behind its event loop runs, now says 1 s, always. Everything else is batchserve's own refusal
path, whose cost the benchmark measures: InferenceHttpProtocol._route reads that lag once the
headers are parsed, InferenceService.overloaded finds it over overload_share of the model's SLO
budget (too_late), counts the refusal and hands back the cached 503, and the protocol reads and
drops the body and writes the 503 (_send). The loop-lag timer itself still ticks as usual.
Why a patch: no setting makes a server refuse everything; under 2 ms of real lag (FLOOR) nothing
is refused whatever the SLO, and a server refusing this cheaply catches up below 2 ms.
"""
import server.admission.overload


def _one_second_behind(self, hold=0.0):
    return 1.0


server.admission.overload.LoopLag.behind = _one_second_behind
'''


def overloaded_refusals(url: str) -> float:
    """Requests of MODEL batchserve refused as overloaded so far (/metrics): proof of the real path."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=120).text.splitlines():
        if (line.startswith("batchserve_rejected_total{") and f'model="{MODEL}"' in line
                and 'reason="overloaded"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def point(server: Server, kind: str, payload_file: Path, rate: float, seed: int,
          args: argparse.Namespace) -> dict[str, Any]:
    """One open-loop point with the server's CPU over it; run again (twice at most) while the
    generator could not keep its own schedule, the least disturbed run kept. Not for ``answer``:
    a saturated server holds all the generator's connections, and its lag is the wait for one."""
    best: dict[str, Any] | None = None
    for attempt in range(1, 4 if kind != "answer" else 2):
        time.sleep(1.0)  # the previous point's connections closed, the server idle
        refused_before = overloaded_refusals(server.url) if kind == "refuse" else 0.0
        batches = batch_totals(server, MODEL) if isinstance(server, LocalServer) else (0.0, 0.0)
        command = [*taskset(GENERATOR_CORE), *open_loop_command(server.url, payload_file, "poisson", rate, SLO, seed),
                   "--warmup", "0", "--duration", str(args.duration)]
        cpu, wall = cpu_seconds(server.process.pid), time.perf_counter()
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout
        cpu, wall = cpu_seconds(server.process.pid) - cpu, time.perf_counter() - wall
        result: dict[str, Any] = json.loads(out)
        requests = result["requests"]
        result.update(kind=kind, rate=rate, kept=attempt, server_cpu_s=cpu, wall_s=wall, cores=cpu / wall,
                      cpu_us_per_request=cpu / max(1, requests) * 1e6,
                      ok=round(result["ok_rps"] * args.duration))
        if isinstance(server, LocalServer):  # outside the CPU window: the scrape costs the server too
            rows, count = (after - before for after, before in zip(batch_totals(server, MODEL), batches))
            result["mean_batch"] = rows / count if count else 0.0
        if kind == "refuse":
            result["overloaded_counted"] = int(overloaded_refusals(server.url) - refused_before)
        expected = requests if kind != "answer" else 0
        result["as_expected"] = (result["refused"] == expected and result["ok"] == requests - expected
                                 and result.get("overloaded_counted", expected) == expected)
        if best is None or result["send_lag_p99_ms"] < best["send_lag_p99_ms"]:
            best = result
        if result["send_lag_p99_ms"] <= MAX_LAG_MS:
            break
    assert best is not None
    best["runs"] = attempt
    return best


def goodput_bound(ratio: float, load: float) -> float:
    """The most a core offered ``load`` times its capacity can answer (share of capacity) when a
    refusal costs ``ratio`` of an answer: (1 - L*r/c) / (1 - r/c), at least 0."""
    if ratio >= 1.0:
        return 0.0
    return max(0.0, (1.0 - load * ratio) / (1.0 - ratio))


def start(kind: str, repo: Path, workdir: Path, binary: Path | None) -> Server:
    """The server for ``kind``, pinned to SERVER_CORE and ready."""
    if kind == "c":
        assert binary is not None
        return BareServer([str(binary)], SERVER_CORE, workdir / "c.log").wait_ready()
    if kind == "uvloop":
        return BareServer([sys.executable, "-m", "load_tests.research.bare_refuser"], SERVER_CORE,
                          workdir / "uvloop.log").wait_ready()
    settings: dict[str, Any] = {"poll_interval": 0, "tf_intra_op_threads": 1, "tf_inter_op_threads": 1,
                                "grpc_port": 0, "log_level": "warning"}
    if kind == "answer":
        return LocalServer(repo, workdir / "answer.log", core=SERVER_CORE, scheduling="fixed",
                           **settings).wait_ready()
    site = workdir / "refuse-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    previous = os.environ.get("PYTHONPATH")
    # ROOT too: sitecustomize runs before `-m` puts the server's cwd (ROOT) first on sys.path, and its
    # import must find this checkout's server package, not whichever one is installed
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), *([previous] if previous else [])])
    try:  # LocalServer copies os.environ into its child's environment: this server only gets the patch
        server = LocalServer(repo, workdir / "refuse.log", core=SERVER_CORE, scheduling="slo", **settings)
    finally:
        if previous is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = previous
    try:
        return server.wait_ready()
    except BaseException:
        server.stop()
        raise


_HEADER = (f"{'kind':<7} {'offered':>8} {'requests':>8} {'503':>7} {'200':>7} {'cores':>6} {'us/req':>7} "
           f"{'lag99 ms':>8} {'runs':>4}  check")


def _row(r: dict[str, Any]) -> str:
    check = "ok" if r["as_expected"] else (
        "NOT ALL 200" if r["kind"] == "answer" else "NOT ALL 503" + (
            f" (overloaded counted {r['overloaded_counted']})" if "overloaded_counted" in r else ""))
    if r.get("unanswered") or r.get("expired") or r.get("other"):
        check += f"; 504 {r['expired']}, unanswered {r['unanswered']}, other {r['other']}"
    return (f"{r['kind']:<7} {r['rate']:>8.0f} {r['requests']:>8} {r['refused']:>7} {r['ok']:>7} {r['cores']:>6.2f} "
            f"{r['cpu_us_per_request']:>7.1f} {r['send_lag_p99_ms']:>8.2f} {r['runs']:>4}  {check}")


def summarize(points: list[dict[str, Any]], rates: list[float]) -> list[dict[str, Any]]:
    """Per rate: r/c of each floor kind against ``answer``, and the goodput bound it allows; printed."""
    rows = []
    for rate in rates:
        at = {p["kind"]: p for p in points if p["rate"] == rate}
        if "answer" not in at:
            continue
        c = at["answer"]["cpu_us_per_request"]
        print(f"\nrate {rate:,.0f}/s: answer c = {c:.1f} us/request")
        print(f"{'kind':<7} {'r us':>6} {'r/c':>6} " + " ".join(f"{f'bound {load:g}x':>10}" for load in LOADS))
        for kind in FLOORS:
            if kind not in at:
                continue
            r = at[kind]["cpu_us_per_request"]
            bounds = {str(load): goodput_bound(r / c, load) for load in LOADS}
            rows.append({"rate": rate, "kind": kind, "refusal_us": r, "answer_us": c, "ratio": r / c,
                         "goodput_bound": bounds})
            print(f"{kind:<7} {r:>6.1f} {r / c:>6.2f} " + " ".join(f"{b:>10.2f}" for b in bounds.values()))
    return rows


def busy(cores: tuple[str, ...], seconds: float = 1.0) -> dict[str, float]:
    """How busy each core is over ``seconds`` (/proc/stat): other work on the machine shows here."""

    def ticks() -> dict[str, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if name.removeprefix("cpu") in cores and name != "cpu":
                numbers = [int(v) for v in values]
                out[name[3:]] = (sum(numbers) - numbers[3] - numbers[4], sum(numbers))  # less idle and iowait
        return out

    before = ticks()
    time.sleep(seconds)
    after = ticks()
    return {core: (after[core][0] - before[core][0]) / max(1, after[core][1] - before[core][1])
            for core in before if core in after}


def _terminate(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)  # the finally blocks stop what was started


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Every kind at every rate, one server at a time; everything started is stopped on the way out."""
    source = Path(args.model_repository) / MODEL / "1"
    if not (source / "saved_model.pb").exists():
        raise SystemExit(f"{source} has no SavedModel: run `batchserve demo-models {args.model_repository}` first")
    payload = encode(MODEL, "v2_binary")
    load = busy((SERVER_CORE, GENERATOR_CORE))
    print("before the run, busy: " + ", ".join(f"core {core} {share:.0%}" for core, share in load.items())
          + ("  (other work on the machine: numbers may be disturbed)" if max(load.values(), default=0) > 0.1
             else ""), flush=True)
    points: list[dict[str, Any]] = []
    idle: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="refusal-floor-") as tmp:
        workdir = Path(tmp)
        repo = workdir / "repo"
        (repo / MODEL).mkdir(parents=True)
        (repo / MODEL / "1").symlink_to(source.resolve())
        (repo / MODEL / "model.yaml").write_text(MODEL_YAML)
        binary = None
        if "c" in args.kinds:
            binary, why = build_c(workdir)
            if binary is None:
                print(f"c: skipped: {why}", flush=True)
        print(_HEADER, flush=True)
        for kind in args.kinds:
            if kind == "c" and binary is None:
                continue
            server = start(kind, repo, workdir, binary)
            try:
                before = cpu_seconds(server.process.pid)
                time.sleep(1.0)
                idle[kind] = cpu_seconds(server.process.pid) - before  # timers and pollers: cores
                payload_file = workdir / f"{kind}.req"
                payload_file.write_bytes(build_request(server.url + payload.path, payload.body,
                                                       payload.content_type, payload.headers))
                for rate in args.rates:
                    result = point(server, kind, payload_file, rate, args.seed, args)
                    result["idle_cores"] = idle[kind]
                    points.append(result)
                    print(_row(result), flush=True)
            finally:
                server.stop()
    print("\nidle server CPU (cores, 1 s before its points): "
          + ", ".join(f"{kind} {cores:.3f}" for kind, cores in idle.items()))
    summary = summarize(points, args.rates)
    bad = [p for p in points if not p["as_expected"]]
    if bad:
        print(f"\nWARNING: {len(bad)} point(s) did not get the expected answers (see check)")
    loop = "uvloop" if _has_uvloop() else "asyncio (uvloop not importable)"
    return {"rates": args.rates, "duration": args.duration, "seed": args.seed, "model": MODEL,
            "model_yaml": MODEL_YAML, "bare_loop": loop, "busy_before": load, "server_core": SERVER_CORE,
            "generator_core": GENERATOR_CORE, "points": points, "summary": summary}


def _has_uvloop() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[16000.0, 32000.0],
                        help="offered requests/s, comma-separated (default 16000,32000)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds of arrivals per point")
    parser.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS),
                        help=f"comma-separated, of {','.join(KINDS)} (default all)")
    parser.add_argument("--seed", type=int, default=3, help="the Poisson arrivals' seed (the same for every kind)")
    parser.add_argument("--model-repository", default=str(ROOT / "models"))
    parser.add_argument("--out", default=None, help="write every point and the summary as JSON here")
    args = parser.parse_args()
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown:
        parser.error(f"unknown kinds {unknown}; choose from {','.join(KINDS)}")
    signal.signal(signal.SIGTERM, _terminate)
    if not _has_uvloop():
        print("uvloop is not importable: the uvloop kind runs on asyncio's own loop", flush=True)
    result = bench(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
