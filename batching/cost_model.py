"""An online model of compute time against batch size, for one model version on one device.

The SLO scheduler (``slo.py``) asks it how long a batch of a given size will hold a
worker slot. It learns from what it is shown: the warm-up timings at each size seed it,
then every batch that ran adds a measurement (the time from dispatch to outputs back,
as the batcher sees it: joining, the worker hop and the model).

Robust to outliers: per batch size it keeps the last ``window`` measurements and
predicts their ``quantile`` (0.75 by default). A stray slow batch (a garbage-collector
pause, a page fault, a batch that was run twice after its worker died) moves that
statistic little or not at all, while a lasting change (a slower device, a noisy
neighbour on the core) replaces the window within ``window`` batches. An upper quantile
rather than the median, because a prediction that is too short makes requests late,
one that is too long only costs a little batch size.

Sizes never measured are interpolated linearly between the nearest measured sizes and
extrapolated from the last two beyond the largest; predictions never decrease with the
batch size (a larger batch never costs less), so "the largest batch that finishes in
time" is a binary search.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping


class CostModel:
    """Predicted seconds a batch of ``size`` rows (the size the model sees, padding included) takes."""

    def __init__(self, window: int = 16, quantile: float = 0.75) -> None:
        if window < 1 or not 0.0 <= quantile <= 1.0:
            raise ValueError(f"CostModel needs window >= 1 and quantile in [0, 1] (got {window}, {quantile})")
        self.window = window
        self.quantile = quantile
        self._samples: dict[int, deque[float]] = {}
        self._sizes: list[int] = []  # measured sizes, ascending
        self._costs: list[float] = []  # their estimates, made non-decreasing in size
        self._raw: dict[int, float] = {}  # each size's own estimate, before that
        self.observations = 0

    @property
    def known(self) -> bool:
        """Whether anything was measured yet (before that every prediction is 0: nothing to go on)."""
        return bool(self._sizes)

    def observe(self, size: int, seconds: float) -> bool:
        """Add one batch's measurement; True when the estimate at that size changed."""
        if size < 1 or not math.isfinite(seconds) or seconds < 0:
            return False
        self.observations += 1
        samples = self._samples.get(size)
        if samples is None:
            samples = self._samples[size] = deque(maxlen=self.window)
        samples.append(seconds)
        estimate = _quantile(sorted(samples), self.quantile)
        if self._raw.get(size) == estimate:
            return False
        self._raw[size] = estimate
        self._sizes = sorted(self._raw)
        running = 0.0
        self._costs = []
        for s in self._sizes:
            running = max(running, self._raw[s])
            self._costs.append(running)
        return True

    def seed(self, costs: Mapping[int, float]) -> None:
        """Start from known timings (the warm-up's, one per size); later batches take over."""
        for size, seconds in sorted(costs.items()):
            self.observe(size, seconds)

    def predict(self, size: int) -> float:
        """Seconds a batch of ``size`` rows is expected to take (0 while nothing is known)."""
        sizes, costs = self._sizes, self._costs
        if not sizes:
            return 0.0
        i = bisect.bisect_left(sizes, size)
        if i < len(sizes) and sizes[i] == size:
            return costs[i]
        if i == 0:
            return costs[0]  # below the smallest measured size: that size's cost bounds it
        if i < len(sizes):  # between two measured sizes
            s0, s1, c0, c1 = sizes[i - 1], sizes[i], costs[i - 1], costs[i]
            return c0 + (c1 - c0) * (size - s0) / (s1 - s0)
        if len(sizes) == 1:  # beyond the only measured size: proportional, the cautious guess
            return costs[0] * size / sizes[0]
        s0, s1, c0, c1 = sizes[-2], sizes[-1], costs[-2], costs[-1]
        return c1 + (c1 - c0) * (size - s1) / (s1 - s0)

    def estimates(self) -> dict[int, float]:
        """The estimate at every measured size (for inspection and tests)."""
        return dict(zip(self._sizes, self._costs))


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolation quantile of an ascending, non-empty list."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
