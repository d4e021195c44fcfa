"""Run one locust scenario headless: ``make load SCENARIO=steady`` or ``python -m load_tests.run steady``.

Without ``--host`` it starts a server on 127.0.0.1 (a free port) over ``--model-repository``
and stops it afterwards. Writes locust's CSV and HTML reports to ``--output`` and exits
non-zero when the scenario's thresholds (failure ratio, p95, p99) are missed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .harness.local_server import ROOT, LocalServer

SCENARIOS: dict[str, dict[str, str]] = {  # shapes (ramp, spike) set users themselves
    "steady": {"users": "16", "spawn_rate": "16", "run_time": "60s"},
    "ramp": {},
    "spike": {},
    "soak": {"users": "16", "spawn_rate": "4", "run_time": "30m"},
    "mixed": {"users": "24", "spawn_rate": "24", "run_time": "60s"},
    "bad_input": {"users": "12", "spawn_rate": "12", "run_time": "60s"},
}


def locust_command(scenario: str, host: str, output: Path, users: str | None, run_time: str | None,
                   time_scale: float) -> list[str]:
    defaults = SCENARIOS[scenario]
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "load_tests" / "scenarios" / f"{scenario}.py"),
               "--headless", "--host", host, "--csv", str(output / scenario), "--html",
               str(output / f"{scenario}.html"), "--only-summary", "--time-scale", str(time_scale)]
    if defaults or users:
        command += ["--users", users or defaults["users"], "--spawn-rate", users or defaults["spawn_rate"]]
    if defaults or run_time:
        command += ["--run-time", run_time or defaults["run_time"]]
    return command


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--host", help="a running server; default: start one")
    parser.add_argument("--model-repository", default="models")
    parser.add_argument("--users", help="override the scenario's users (steady, soak, mixed, bad_input)")
    parser.add_argument("--run-time", help="override the scenario's run time, e.g. 5m")
    parser.add_argument("--time-scale", type=float, default=1.0, help="scale the ramp and spike shapes' timings")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, a few users: checks the wiring")
    parser.add_argument("--output", default="results/locust")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.run_time, args.time_scale = args.users or "4", args.run_time or "6s", 0.1
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    server = None
    host = args.host
    if host is None:
        server = LocalServer(args.model_repository, output / f"{args.scenario}-server.log",
                             poll_interval=0).wait_ready()
        host = server.url
    try:
        command = locust_command(args.scenario, host, output, args.users, args.run_time, args.time_scale)
        return subprocess.run(command, cwd=ROOT, check=False).returncode
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
