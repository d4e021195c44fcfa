"""Triton's statistics extension: each model version's counters and the ``model_stats`` document.

Units are Triton's: counts and nanoseconds, ``last_inference`` in milliseconds since the epoch.
``success`` and ``fail`` are requests answered (the time from arrival to answer); ``queue`` is per
request; ``compute_infer`` is counted per row (a request of n rows counts n), each with its batch's
time, so ``ns / count`` is the average batch time as Triton's; batchserve times a batch as one
(join, model, split), so ``compute_input`` and ``compute_output`` have the counts and 0 ns.
``batch_stats``: each batch size (real rows) run, its runs and their time. Counters kept where they
happen: a front end's requests, the engine's batches (``server/app.py: _statistics_source`` adds them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

_FIELDS = ("success", "success_ns", "fail", "fail_ns", "queue", "queue_ns", "rows", "compute_ns", "executions")


class VersionStats:
    """One model version's counters (updated on the event loop's thread only)."""

    __slots__ = (*_FIELDS, "batches", "last_inference")

    def __init__(self) -> None:
        self.success = self.success_ns = self.fail = self.fail_ns = self.queue = self.queue_ns = 0
        self.rows = self.compute_ns = self.executions = self.last_inference = 0
        self.batches: dict[int, list[int]] = {}  # batch size -> [runs, ns]

    def answered(self, ok: bool, seconds: float) -> None:
        if ok:
            self.success += 1
            self.success_ns += int(seconds * 1e9)
        else:
            self.fail += 1
            self.fail_ns += int(seconds * 1e9)

    def queued(self, seconds: float, requests: int) -> None:
        self.queue += requests
        self.queue_ns += int(seconds * 1e9) * requests

    def computed(self, seconds: float, rows: int) -> None:
        ns = int(seconds * 1e9)
        self.rows += rows
        self.compute_ns += ns * rows
        self.executions += 1
        self.last_inference = time.time_ns() // 1_000_000
        runs = self.batches.get(rows)
        if runs is None:
            runs = self.batches[rows] = [0, 0]
        runs[0] += 1
        runs[1] += ns

    def add(self, other: VersionStats) -> VersionStats:
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.last_inference = max(self.last_inference, other.last_inference)
        for size, (runs, ns) in other.batches.items():
            mine = self.batches.setdefault(size, [0, 0])
            mine[0] += runs
            mine[1] += ns
        return self

    def document(self, name: str, version: str) -> dict[str, Any]:
        def duration(count: int, ns: int) -> dict[str, int]:
            return {"count": count, "ns": ns}

        return {
            "name": name, "version": version, "last_inference": self.last_inference,
            "inference_count": self.rows, "execution_count": self.executions,
            "inference_stats": {
                "success": duration(self.success, self.success_ns), "fail": duration(self.fail, self.fail_ns),
                "queue": duration(self.queue, self.queue_ns), "compute_input": duration(self.rows, 0),
                "compute_infer": duration(self.rows, self.compute_ns), "compute_output": duration(self.rows, 0)},
            "batch_stats": [{"batch_size": size, "compute_input": duration(runs, 0),
                             "compute_infer": duration(runs, ns), "compute_output": duration(runs, 0)}
                            for size, (runs, ns) in sorted(self.batches.items())],
        }


StatsTable = dict[tuple[str, str], VersionStats]  # by (model, version)


def merged(*tables: Mapping[tuple[str, str], VersionStats]) -> StatsTable:
    total: StatsTable = {}
    for table in tables:
        for key, stats in table.items():
            total.setdefault(key, VersionStats()).add(stats)
    return total


def statistics_document(versions: Iterable[tuple[str, str]], table: Mapping[tuple[str, str], VersionStats]
                        ) -> dict[str, Any]:
    """Triton's ``ModelStatisticsResponse`` as JSON (HTTP answers it; gRPC parses its message from it)."""
    return {"model_stats": [table.get(key, VersionStats()).document(*key) for key in versions]}
