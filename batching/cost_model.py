"""An online model of compute time against batch size, for one model version on one device.

The SLO scheduler (``slo.py``) asks it how long a batch of a given size will hold a
worker slot. It learns from what it is shown: the warm-up timings at each size seed it,
then every batch that ran adds a measurement: the model's own time, as its worker timed
it (``TimedOutputs``; the time from dispatch to outputs back where a pool does not say).
What the batcher sees beyond that (joining, the hop to the worker, event-loop lag) is not
a function of the batch size; ``slo.SloState`` keeps it apart, as overhead.

Robust to outliers, and to sizes seen rarely or never:

- per batch size it keeps the last ``window`` (16) measurements; their ``quantile`` (the
  median: an unbiased centre; the scheduler adds its own margin for the tail, learned from
  how batches overrun these predictions, ``slo.SloState.margin``) is that size's
  estimate. A stray slow batch (a garbage-collector pause, a neighbour on the core, a
  batch run twice after its worker died) does not move it; a lasting change replaces
  the window within 16 batches.
- only a size with at least ``trusted`` (8) measurements is believed on its own. The
  others (a size seen once, the warm-up's single timing of a size that live traffic
  never forms) only inform a straight line ``base + per_row * size`` until two sizes
  are trusted; then the line is fitted over the trusted sizes alone (weighted by their
  measurements). So one odd batch cannot make a whole range of sizes look expensive,
  and a stale warm-up figure gives way to what live batches show.
- between trusted sizes: linear interpolation; beyond the largest: its estimate plus
  the fitted per-row cost; below the smallest: the line, capped at its estimate.

Predictions never decrease with the batch size (a larger batch never costs less), so
"the largest batch that finishes in time" is a binary search.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Mapping


class CostModel:
    """Predicted seconds a batch of ``size`` rows (the size the model sees, padding included) takes."""

    def __init__(self, window: int = 16, quantile: float = 0.5, trusted: int = 8) -> None:
        if window < 1 or not 0.0 <= quantile <= 1.0 or not 1 <= trusted <= window:
            raise ValueError(f"CostModel needs window >= 1, quantile in [0, 1] and trusted in 1..window "
                             f"(got {window}, {quantile}, {trusted})")
        self.window = window
        self.quantile = quantile
        self.trusted = trusted
        self._samples: dict[int, deque[float]] = {}
        self._estimate: dict[int, float] = {}  # each size's own estimate (window quantile)
        self._dirty = False
        # Rebuilt lazily after a change: trusted sizes, their (non-decreasing) costs, the fitted line.
        self._sizes: list[int] = []
        self._costs: list[float] = []
        self._base = 0.0
        self._per_row = 0.0
        self.observations = 0

    @property
    def known(self) -> bool:
        """Whether anything was measured yet (before that every prediction is 0: nothing to go on)."""
        return bool(self._estimate)

    def observe(self, size: int, seconds: float) -> bool:
        """Add one batch's measurement; True when that size's estimate changed."""
        if size < 1 or not math.isfinite(seconds) or seconds < 0:
            return False
        self.observations += 1
        samples = self._samples.get(size)
        if samples is None:
            samples = self._samples[size] = deque(maxlen=self.window)
        samples.append(seconds)
        estimate = _quantile(sorted(samples), self.quantile)
        if self._estimate.get(size) == estimate and len(samples) != self.trusted:
            return False
        self._estimate[size] = estimate
        self._dirty = True
        return True

    def seed(self, costs: Mapping[int, float]) -> None:
        """Start from known timings (the warm-up's, one per size); live batches outvote them."""
        for size, seconds in sorted(costs.items()):
            self.observe(size, seconds)

    def predict(self, size: int) -> float:
        """Seconds a batch of ``size`` rows is expected to take (0 while nothing is known)."""
        if self._dirty:
            self._rebuild()
        sizes, costs = self._sizes, self._costs
        line = self._base + self._per_row * size
        if not sizes:
            return line
        i = bisect.bisect_left(sizes, size)
        if i < len(sizes) and sizes[i] == size:
            return costs[i]
        if i == 0:
            return min(line, costs[0])
        if i == len(sizes):
            return costs[-1] + self._per_row * (size - sizes[-1])
        s0, s1, c0, c1 = sizes[i - 1], sizes[i], costs[i - 1], costs[i]
        return c0 + (c1 - c0) * (size - s0) / (s1 - s0)

    def estimates(self) -> dict[int, float]:
        """Each measured size's own estimate (for inspection and tests)."""
        return dict(sorted(self._estimate.items()))

    def _rebuild(self) -> None:
        self._dirty = False
        points = [(s, e, len(self._samples[s])) for s, e in self._estimate.items()]
        trusted = [p for p in points if p[2] >= self.trusted]
        self._base, self._per_row = _fit(trusted if len(trusted) >= 2 else points)
        self._sizes, self._costs = [], []
        running = 0.0
        for size in sorted(self._estimate):
            if len(self._samples[size]) >= self.trusted:
                running = max(running, self._estimate[size])
                self._sizes.append(size)
                self._costs.append(running)


def _fit(points: list[tuple[int, float, int]]) -> tuple[float, float]:
    """``base``, ``per_row`` >= 0 of the weighted least-squares line through (size, seconds, weight)."""
    if not points:
        return 0.0, 0.0
    total = sum(w for _, _, w in points)
    mean_s = sum(s * w for s, _, w in points) / total
    mean_c = sum(c * w for _, c, w in points) / total
    spread = sum(w * (s - mean_s) ** 2 for s, _, w in points)
    if spread == 0:  # one size: proportional to the batch size, the cautious guess beyond it
        return 0.0, mean_c / mean_s
    per_row = sum(w * (s - mean_s) * (c - mean_c) for s, c, w in points) / spread
    if per_row < 0:
        return mean_c, 0.0
    base = mean_c - per_row * mean_s
    if base < 0:  # through the origin instead
        return 0.0, sum(w * s * c for s, c, w in points) / sum(w * s * s for s, _, w in points)
    return base, per_row


def _quantile(ordered: list[float], q: float) -> float:
    """Linear-interpolation quantile of an ascending, non-empty list."""
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
