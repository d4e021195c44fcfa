"""Run one locust scenario headless: ``make load SCENARIO=steady`` or ``python -m load_tests.run steady``.

Without ``--host`` it starts a server on 127.0.0.1 (a free port) over ``--model-repository``
and stops it afterwards. Writes locust's CSV and HTML reports to ``--output`` and exits
non-zero when the scenario's thresholds (failure ratio, p95, p99) are missed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS: dict[str, dict[str, str]] = {  # shapes (ramp, spike) set users themselves
    "steady": {"users": "16", "spawn_rate": "16", "run_time": "60s"},
    "ramp": {},
    "spike": {},
    "soak": {"users": "16", "spawn_rate": "4", "run_time": "30m"},
    "mixed": {"users": "24", "spawn_rate": "24", "run_time": "60s"},
    "bad_input": {"users": "12", "spawn_rate": "12", "run_time": "60s"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repository: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    handle = open(log, "wb")
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve", "--model-repository", repository,
                                "--port", str(port), "--poll-interval", "0"], cwd=ROOT, stdout=handle,
                               stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited; see {log}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server was not ready in time; see {log}")


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
        server, host = start_server(args.model_repository, output / f"{args.scenario}-server.log")
    try:
        command = locust_command(args.scenario, host, output, args.users, args.run_time, args.time_scale)
        return subprocess.run(command, cwd=ROOT, check=False).returncode
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)


if __name__ == "__main__":
    sys.exit(main())
