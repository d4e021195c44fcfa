"""How many requests a second a front end lets through to a model version, cut when its answers come late.

The loop-lag rule (server/admission/overload.py) is all or nothing: while the loop runs behind it refuses
every request of a model, and once it has caught up it lets every one through. When reading
requests is what saturates the core (``tabular``: one core for HTTP and the model) that
alternates: the requests let through in each opening fill the loop again, their answers come
late, and at 1.3x capacity most answers were late or expired (goodput 0.02-0.17 of capacity).
So each front end also limits the rate it admits, the way TCP limits a window (additive
increase, multiplicative decrease), judged by the outcome the SLO is about: ``streak`` windows in a
row with more than ``late_share`` of their answers late (after the SLO, or expired) start the
limit at ``CUT`` times the rate answered in the last, and each late window while limiting cuts
it again; each other window raises it, and once it is twice the rate that arrives the limit is
dropped (at once after a window without arrivals: a burst after a pause starts afresh, and the
batcher's own admission judges it). Requests over
the rate are refused as the loop-lag rule refuses them, before their bodies are read: a refusal
costs the core a third of an answer, so what is refused pays for what is answered in time.
Answers to requests that started before the last cut are not held against the rate.

Times are passed in (``time.perf_counter`` in the server), so the rule is tested as tables.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from server.admission.overload import Overloaded


class LateAnswers(Overloaded):
    """Over the rate a front end lets through while the model's answers come late (HTTP 503, reason
    ``admitted_rate``; gRPC RESOURCE_EXHAUSTED)."""


WINDOW = 0.05  # default seconds of answers judged together: 2 SLOs of tabular's, a fifth of image_classifier's
CUT = 0.85  # a late window cuts the rate to this share of the rate answered in it
GROW = 0.03  # each window without lateness raises the rate by this share ...
STEP = 100.0  # ... and by this many requests a second (a rate cut near zero must recover)
MIN_ANSWERS = 20  # fewer answers in a window say nothing about lateness
STREAK = 3  # default late windows in a row that start limiting: one alone is a stall, not too many requests
BURST = 0.005  # seconds of the rate that may be admitted at once (Poisson arrivals bunch); one request at least


class AdmissionRate:
    """The admitted-rate limit of one model version in one front end (``rate``, requests/s; inf: none)."""

    def __init__(self, late_share: float, now: float, on_change: Callable[[float, float], None] | None = None,
                 window: float = WINDOW, streak: int = STREAK) -> None:
        self.late_share = late_share
        self.window = window
        self.streak = streak
        self.rate = math.inf
        self._on_change = on_change  # called with the old rate and the new one whenever it changes
        self._tokens = 0.0
        self._last = now  # when the tokens were last counted
        self._start = now  # the current window's
        self._cut = -math.inf  # when the rate was last cut: requests that started before say nothing of it
        self._arrived = self._good = self._late = 0
        self._streak = 0  # late windows in a row while not limiting

    @property
    def limiting(self) -> bool:
        return self.rate != math.inf

    def admit(self, now: float) -> bool:
        """Whether a request arriving ``now`` is let through (only asked while ``limiting``)."""
        if now - self._start >= self.window:
            self._judge(now)
            if not self.limiting:
                return True
        self._arrived += 1
        self._tokens = min(max(1.0, self.rate * BURST), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def answered(self, on_time: bool, now: float, started: float) -> None:
        """A request that ``started`` (was read) then was answered ``now`` (``on_time``: within its
        SLO) or expired (False). One that started before the last cut was let through by the rate
        before it: its lateness is not held against the rate now."""
        if started >= self._cut:
            if on_time:
                self._good += 1
            else:
                self._late += 1
        if now - self._start >= self.window:
            self._judge(now)

    def _judge(self, now: float) -> None:
        span = now - self._start
        answers = self._good + self._late
        old = self.rate
        late = answers >= MIN_ANSWERS and self._late > self.late_share * answers
        self._streak = self._streak + 1 if late and not self.limiting else 0
        if late and (self.limiting or self._streak >= self.streak):
            self.rate = min(self.rate, CUT * answers / span)
            self._tokens, self._last, self._cut = 0.0, now, now
        elif self.limiting:  # a window without arrivals drops it: the next burst starts afresh
            self.rate = self.rate * (1 + GROW) + STEP * span / self.window
            if self.rate > 2 * self._arrived / span:
                self.rate = math.inf
        self._start = now
        self._arrived = self._good = self._late = 0
        if self.rate != old and self._on_change is not None:
            self._on_change(old, self.rate)
