"""Observable server state for ordering test events: metric values read from /metrics, waited on."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .payloads import INFER, row_body  # row_body is defined there; tests import it from here too


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` when it never is.

    A connection refused or reset while polling counts as "not yet": a front end being killed or
    replaced refuses the connections that were still in its accept queue.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def synthetic_repository(root: Path, gate: Path | None = None, **overrides: Any) -> Path:
    """A repository with one synthetic model ``syn``: features FP32 [-1, 4] -> total FP32 [-1, 1] (the row's first value)."""
    (root / "syn" / "1").mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "backend": "synthetic",
        "max_batch_size": 4,
        "signature": {"inputs": {"features": {"datatype": "FP32", "shape": [-1, 4]}},
                      "outputs": {"total": {"datatype": "FP32", "shape": [-1, 1]}}},
        "synthetic": {"base_ms": 1.0, "gate_path": str(gate) if gate else None},
        **overrides,
    }
    (root / "syn" / "model.yaml").write_text(yaml.safe_dump(config))
    return root


async def until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """``wait_until`` for async tests: polls on a thread so the test's own requests keep moving."""
    import asyncio

    return await asyncio.to_thread(wait_until, condition, what, timeout)


def children(pid: int, role: str) -> list[int]:
    """Pids of a supervisor's ``engine`` or ``frontend`` processes."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        if b"server.multiprocess.process_main" in cmdline and role.encode() in cmdline:
            found.append(int(child))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *descendants(int(child))]
    return found


def worker_pids(pid: int) -> list[int]:
    """Pids of the model worker processes (``python -m server.runtime.worker_process``) anywhere below ``pid``."""
    pids = []
    for child in descendants(pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:  # gone meanwhile
            continue
        if b"server.runtime.worker_process" in cmdline.split(b"\0"):
            pids.append(child)
    return pids


async def hold_a_batch(http: Any, url: str, value: float) -> Any:
    """Send one row to ``syn`` (its gate held) and return the pending response once its batch is computing."""
    import asyncio

    pending = asyncio.ensure_future(http.post(INFER, json=row_body(value)))
    await until(lambda: metric(url, "batchserve_inflight_batches", model="syn") == 1, "a batch computing")
    return pending


async def rows_queued(url: str, rows: int) -> None:
    """Wait until ``syn``'s queue holds exactly ``rows`` rows."""
    await until(lambda: metric(url, "batchserve_queue_depth", model="syn") == rows, f"{rows} rows queued")
