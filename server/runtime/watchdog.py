"""When a batch counts as hung, and how much memory a worker process holds.

A batch's time limit is ``batch_timeout_ms`` from model.yaml, else a generous
multiple of the slowest warm-up batch (which includes tracing, so it is already
slower than steady state), never below a floor that rides out a busy machine.
"""

from __future__ import annotations

import os

MIN_BATCH_TIMEOUT_S = 5.0
WARMUP_FACTOR = 10.0
UNWARMED_BATCH_TIMEOUT_S = 60.0  # no warm-up timings to go by
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def batch_timeout(configured: float | None, slowest_warmup: float | None) -> float:
    """Seconds a batch may compute before its worker is treated as hung."""
    if configured is not None:
        return configured
    if slowest_warmup is None:
        return UNWARMED_BATCH_TIMEOUT_S
    return max(MIN_BATCH_TIMEOUT_S, WARMUP_FACTOR * slowest_warmup)


def resident_mb(pid: int) -> float:
    """The process's resident set in MiB (0 where /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0
