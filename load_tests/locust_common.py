"""What every locust scenario shares: users per model and wire format, bad-input users, thresholds.

Bodies are encoded once per user (on_start), never per request: encoding an
image as JSON costs the generator ~20 ms. FastHttpUser keeps the generator cheap.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from locust import FastHttpUser, constant, events, task
from locust.env import Environment

from .harness.payloads import BAD_BODIES, Payload, encode

log = logging.getLogger("batchserve.load")


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--time-scale", type=float, default=1.0, env_var="LOCUST_TIME_SCALE",
                        help="multiply every load-shape duration (0.1 for a smoke run)")


class ModelUser(FastHttpUser):
    """Sends one pre-encoded request after another; anything but 200 is a failure."""

    abstract = True
    wait_time = constant(0)
    model = "tabular"
    fmt = "v2_binary"
    rows = 1

    def on_start(self) -> None:
        self.payload: Payload = encode(self.model, self.fmt, rows=self.rows, seed=random.randrange(1 << 16))
        self.headers = {"Content-Type": self.payload.content_type, **self.payload.headers}

    @task
    def infer(self) -> None:
        with self.client.post(self.payload.path, data=self.payload.body,  # type: ignore[arg-type]
                              headers=self.headers,
                              name=f"{self.model} {self.fmt}", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")


class BadInputUser(FastHttpUser):
    """Malformed requests: each must be answered 4xx with an error body; a 5xx is a failure."""

    abstract = True
    wait_time = constant(0)

    @task
    def bad(self) -> None:
        path, body = random.choice(BAD_BODIES)
        with self.client.post(path, data=body,  # type: ignore[arg-type]
                              headers={"Content-Type": "application/json"},
                              name="bad input", catch_response=True) as response:
            if 400 <= response.status_code < 500 and b'"error"' in (response.content or b""):
                response.success()
            else:
                response.failure(f"expected a 4xx error body, got HTTP {response.status_code}")


def user(model: str, fmt: str, weight: int = 1, rows: int = 1) -> type[ModelUser]:
    """A concrete user class for one model and wire format."""
    return type(f"{model}_{fmt}", (ModelUser,), {"model": model, "fmt": fmt, "weight": weight, "rows": rows,
                                                   "abstract": False})


def install_thresholds(fail_ratio: float, p95_ms: float, p99_ms: float) -> None:
    """Exit non-zero at the end of the run when a threshold is missed (locust's own exit code)."""

    @events.quitting.add_listener
    def _check(environment: Environment, **_: Any) -> None:
        total = environment.stats.total
        problems = []
        if total.num_requests == 0:
            problems.append("no requests were made")
        if total.fail_ratio > fail_ratio:
            problems.append(f"failure ratio {total.fail_ratio:.2%} > {fail_ratio:.2%}")
        p95, p99 = total.get_response_time_percentile(0.95), total.get_response_time_percentile(0.99)
        if p95 > p95_ms:
            problems.append(f"p95 {p95:.0f} ms > {p95_ms:.0f} ms")
        if p99 > p99_ms:
            problems.append(f"p99 {p99:.0f} ms > {p99_ms:.0f} ms")
        if problems:
            log.error("thresholds missed: %s", "; ".join(problems))
            environment.process_exit_code = 1
        else:
            log.info("thresholds met: %d requests, failures %.2f%%, p95 %.0f ms, p99 %.0f ms",
                     total.num_requests, total.fail_ratio * 100, p95, p99)


def time_scale(environment: Environment | None) -> float:
    options = getattr(environment, "parsed_options", None)
    return float(getattr(options, "time_scale", 1.0) or 1.0)
