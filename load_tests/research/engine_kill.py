"""What clients see when the model engine process is SIGKILLed under closed-loop load (docs/reliability.md).

    python -m load_tests.research.engine_kill --model-repository models --model tabular --clients 8 \
        --deadline-s 5 [--engine-restart-hold-s 0] [--frontends 2] [--workers process]

Starts ``batchserve serve`` on a free port, runs ``--clients`` closed-loop clients of one-row V2 JSON
requests for ``--before`` seconds, SIGKILLs the engine, and goes on for ``--after`` seconds. Reports every
answer by outcome in the window after the kill, the longest time without a 200 around the kill (the time
to serve again), the slowest answer, the front ends' own "the model engine is back after" figures, and how
many of the engine's process workers the next engine adopted (alive, loaded and warm) of those it has.
With ``--model syn`` (the synthetic model of tests/observe.py, written to a temporary repository) each
answer is checked against the row it was sent for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from ..harness.local_server import LocalServer, machine

FEATURES = {"tabular": ("features", 32), "syn": ("features", 4)}


def engine_pid(supervisor: int) -> int:
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        if b"engine" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
            return int(child)
    raise RuntimeError("no engine process under the supervisor")


async def run(url: str, model: str, clients: int, deadline_s: float | None, before: float, after: float,
              server: LocalServer) -> dict[str, Any]:
    name, width = FEATURES[model]
    answers: list[tuple[float, float, str]] = []  # sent, answered, outcome
    stop = asyncio.Event()

    async def client(index: int, http: httpx.AsyncClient) -> None:
        sent_count = 0
        while not stop.is_set():
            value = float((index + 1) * 100_000 + sent_count)
            sent_count += 1
            body: dict[str, Any] = {"inputs": [{"name": name, "datatype": "FP32", "shape": [1, width],
                                                "data": [value] + [0.0] * (width - 1)}]}
            if deadline_s is not None:
                body["parameters"] = {"timeout": int(deadline_s * 1e6)}
            sent = time.monotonic()
            try:
                response = await http.post(f"/v2/models/{model}/infer", json=body)
                outcome = str(response.status_code)
                if response.status_code == 200 and model == "syn" and \
                        response.json()["outputs"][0]["data"] != [value]:
                    outcome = "wrong"
            except httpx.HTTPError as error:
                outcome = type(error).__name__
            answers.append((sent, time.monotonic(), outcome))

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        tasks = [asyncio.create_task(client(i, http)) for i in range(clients)]
        await asyncio.sleep(before)
        killed = time.monotonic()
        os.kill(engine_pid(server.process.pid), signal.SIGKILL)
        await asyncio.sleep(after)
        stop.set()
        await asyncio.gather(*tasks)
    window = [a for a in answers if a[1] >= killed]
    ok_after = sorted(done for _, done, outcome in answers if outcome == "200" and done >= killed)
    ok_before = max((done for _, done, outcome in answers if outcome == "200" and done < killed), default=killed)
    gaps = [b - a for a, b in zip([ok_before, *ok_after], ok_after)]
    backs = [float(x) for x in re.findall(r"the model engine is back after (\d+\.\d+) s", server.log())]
    adopted = [(int(n), int(m)) for n, m in re.findall(r"adopted (\d+) of (\d+) workers", server.log())]
    return {
        "answers_after_kill": len(window),
        "outcomes_after_kill": dict(Counter(outcome for _, _, outcome in window)),
        "client_errors": sum(1 for _, _, outcome in window if outcome != "200"),
        "longest_gap_without_200_s": round(max(gaps, default=0.0), 3),
        "slowest_answer_s": round(max((done - sent for sent, done, _ in window), default=0.0), 3),
        "frontends_back_after_s": backs,
        "workers_adopted": f"{sum(n for n, _ in adopted)} of {sum(m for _, m in adopted)}",  # by the next engine
    }


def syn_repository(root: Path) -> Path:
    (root / "syn" / "1").mkdir(parents=True)
    (root / "syn" / "model.yaml").write_text(
        "backend: synthetic\nmax_batch_size: 32\nsynthetic: {base_ms: 1.0}\nsignature:\n"
        "  inputs: {features: {datatype: FP32, shape: [-1, 4]}}\n"
        "  outputs: {total: {datatype: FP32, shape: [-1, 1]}}\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path)
    parser.add_argument("--model", choices=sorted(FEATURES), default="syn")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--deadline-s", type=float, default=5.0, help="each request's deadline; 0: none")
    parser.add_argument("--before", type=float, default=5.0)
    parser.add_argument("--after", type=float, default=25.0)
    parser.add_argument("--frontends", default="2")
    parser.add_argument("--workers", default="process")
    parser.add_argument("--engine-restart-hold-s", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="engine-kill-") as scratch:
        repository = args.model_repository or syn_repository(Path(scratch) / "repo")
        settings: dict[str, Any] = {"frontends": args.frontends, "workers": args.workers, "poll_interval": 0}
        if args.engine_restart_hold_s is not None:
            settings["engine_restart_hold_s"] = args.engine_restart_hold_s
        server = LocalServer(repository, Path(scratch) / "server.log", **settings).wait_ready()
        try:
            report = asyncio.run(run(server.url, args.model, args.clients, args.deadline_s or None, args.before,
                                     args.after, server))
        finally:
            server.stop()
    print(json.dumps({"machine": machine(), "settings": settings, "model": args.model, "clients": args.clients,
                      "deadline_s": args.deadline_s, **report}, indent=1))


if __name__ == "__main__":
    main()
