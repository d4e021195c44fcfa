"""Limits on what one client can make a front end hold: request bytes in flight, requests per token.

Both are per process (each front end keeps its own), cheap on the hot path (an integer compare, a
dict lookup) and off when their setting is 0. The other limits live where the bytes are parsed:
header count and size in server/http/protocol.py, body size in server/http/body.py, declared
tensor shapes against the body in server/codecs/v2_tensor.py (docs/security.md lists them all).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimited(RuntimeError):
    """The token has used its request rate (HTTP 429 + Retry-After)."""

    retry_after = 1


class InflightFull(RuntimeError):
    """The front end holds max_inflight_bytes of request bodies already (HTTP 503 + Retry-After)."""


class InflightBytes:
    """Request body bytes this front end holds now; a request that would pass ``limit`` is refused (503)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, size: int, own: int = 0) -> bool:
        """Count ``size`` more bytes of a request that holds ``own`` already (a chunked body, as it arrives)."""
        if self.used + size > self.limit and self.used > own:  # one request alone is bounded by max_body_bytes
            return False
        self.used += size
        return True

    def release(self, size: int) -> None:
        self.used -= size


class TokenRate:
    """A token bucket per token: ``rate`` requests a second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._clock = clock
        self._buckets: dict[bytes, tuple[float, float]] = {}  # token digest -> (tokens left, when)

    def allow(self, key: bytes) -> bool:
        now = self._clock()
        left, then = self._buckets.get(key, (self.burst, now))
        left = min(self.burst, left + (now - then) * self.rate)
        if left < 1.0:
            self._buckets[key] = (left, now)
            return False
        self._buckets[key] = (left - 1.0, now)
        return True
