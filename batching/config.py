"""BatchConfig: the knobs of one batcher, validated once at construction."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import InvalidBatchConfig


@dataclass(frozen=True)
class RaggedOutput:
    """An output whose ``output_axis`` follows the padded ``input_axis`` of ``source_input``.

    After the batch runs, each request's slice of this output is cut back to
    that request's own length on ``output_axis`` (e.g. per-token logits).
    """

    source_input: str
    input_axis: int = 1
    output_axis: int = 1


@dataclass(frozen=True)
class BatchConfig:
    """How requests are gathered into batches.

    max_batch_size: rows per batch at most.
    max_queue_delay: seconds the oldest queued request may wait for others.
    preferred_batch_sizes: reaching one dispatches at once; at or above the
        largest, a batch of that size is dispatched at once.
    allowed_batch_sizes: the only sizes the model sees; a batch is padded up to
        the next one (repeating its first row) and padding rows are dropped
        from the outputs. When given, the largest must equal max_batch_size.
    max_queue_size: rows waiting at most; beyond it submit raises QueueFull.
    max_inflight_batches: batches computing at once; the next batch forms while
        earlier ones compute.
    priority_levels: priorities are 0 (default, lowest) .. priority_levels-1.
    priority_aging: None or 0 (the default, as in Triton): no aging; a request of a
        higher priority is always taken before one of a lower priority, however
        long that one has waited. A number of seconds: every this many seconds a
        request waits raises its effective priority one level (up to the top), so
        low priorities are never starved; a request that waited levels x this long
        competes with the top level on deadline and arrival.
    default_timeout: seconds a request may wait when it brings no deadline.
    dispatch_when_idle: when no batch is computing, dispatch what is queued at
        once instead of waiting max_queue_delay: a lone request pays no delay,
        and under load batches still fill while the previous one computes.
    scheduling: "fixed" (the rule in policy.py) or "slo" (slo.py): each
        request's deadline becomes the earlier of its own and arrival + slo,
        batches are sized and timed so the most urgent request finishes in
        time (max_queue_delay stays the longest a batch waits for company), and
        a request predicted to finish late is refused at submit (PredictedLate).
    slo: the latency target in seconds; required by scheduling "slo".
    slo_reserve: seconds of each SLO kept for the work the batcher does not see
        (reading and parsing the request before it is queued, encoding and
        sending the answer, the network): scheduling "slo" plans every request
        to finish by arrival + slo - slo_reserve.
    pad_inputs: input name -> pad value; those inputs may differ between
        requests in their non-batch dimensions and are padded to the largest.
    ragged_outputs: output name -> RaggedOutput, un-padded per request.
    retry_lost_batches: times a batch whose worker died or hung (run_batch raised
        ComputeLost) is run again before its requests see an error; when the
        retry is lost too, the batch is bisected until the rows that kill the
        worker on their own are found, and only their requests fail. 0: a lost
        batch fails at once (for models with side effects).
    poison_quarantine: seconds for which rows found to kill the worker are
        refused at submit (PoisonInput), so a client's retry loop cannot take
        the workers down again; 0 turns the quarantine off.
    """

    max_batch_size: int = 32
    max_queue_delay: float = 0.002
    preferred_batch_sizes: tuple[int, ...] = ()
    allowed_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 4096
    max_inflight_batches: int = 1
    priority_levels: int = 1
    priority_aging: float | None = None
    default_timeout: float | None = None
    dispatch_when_idle: bool = False
    scheduling: str = "fixed"
    slo: float | None = None
    slo_reserve: float = 0.0
    pad_inputs: Mapping[str, Any] = field(default_factory=dict)
    ragged_outputs: Mapping[str, RaggedOutput] = field(default_factory=dict)
    retry_lost_batches: int = 1
    poison_quarantine: float = 300.0

    def __post_init__(self) -> None:
        def fail(name: str, why: str) -> None:
            raise InvalidBatchConfig(f"BatchConfig.{name} {why} (got {getattr(self, name)!r})")

        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            fail("max_batch_size", "must be an integer >= 1")
        if not self.max_queue_delay >= 0:
            fail("max_queue_delay", "must be >= 0 seconds")
        for name in ("preferred_batch_sizes", "allowed_batch_sizes"):
            sizes = tuple(getattr(self, name))
            object.__setattr__(self, name, tuple(sorted(set(sizes))))
            if any(not isinstance(s, int) or s < 1 or s > self.max_batch_size for s in sizes):
                fail(name, f"must hold integers in 1..max_batch_size={self.max_batch_size}")
        if self.allowed_batch_sizes and self.allowed_batch_sizes[-1] != self.max_batch_size:
            fail("allowed_batch_sizes", f"must end with max_batch_size={self.max_batch_size}")
        if not isinstance(self.max_queue_size, int) or self.max_queue_size < 1:
            fail("max_queue_size", "must be an integer >= 1")
        if not isinstance(self.max_inflight_batches, int) or self.max_inflight_batches < 1:
            fail("max_inflight_batches", "must be an integer >= 1")
        if not isinstance(self.priority_levels, int) or self.priority_levels < 1:
            fail("priority_levels", "must be an integer >= 1")
        if self.priority_aging is not None:
            if isinstance(self.priority_aging, bool) or not 0 <= self.priority_aging < math.inf:
                fail("priority_aging", "must be a finite number of seconds >= 0 (0: no aging) or None")
            if self.priority_aging == 0:
                object.__setattr__(self, "priority_aging", None)
        if not isinstance(self.retry_lost_batches, int) or self.retry_lost_batches < 0:
            fail("retry_lost_batches", "must be an integer >= 0")
        if not self.poison_quarantine >= 0:
            fail("poison_quarantine", "must be >= 0 seconds")
        if self.default_timeout is not None and not self.default_timeout > 0:
            fail("default_timeout", "must be > 0 seconds or None")
        if self.scheduling not in ("fixed", "slo"):
            fail("scheduling", 'must be "fixed" or "slo"')
        if self.slo is not None and not self.slo > 0:
            fail("slo", "must be > 0 seconds or None")
        if not 0 <= self.slo_reserve < (self.slo or math.inf):
            fail("slo_reserve", "must be >= 0 seconds and less than slo")
        if self.scheduling == "slo" and self.slo is None:
            fail("slo", 'must be set when scheduling is "slo"')
        for out, ragged in self.ragged_outputs.items():
            if ragged.source_input not in self.pad_inputs:
                fail("ragged_outputs", f"entry {out!r} follows {ragged.source_input!r}, which is not in pad_inputs")
            if ragged.input_axis < 1 or ragged.output_axis < 1:
                fail("ragged_outputs", f"entry {out!r} must name non-batch axes (>= 1)")
        object.__setattr__(self, "pad_inputs", MappingProxyType(dict(self.pad_inputs)))
        object.__setattr__(self, "ragged_outputs", MappingProxyType(dict(self.ragged_outputs)))

    def padded_size(self, rows: int) -> int:
        """The batch size the model sees for this many real rows."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows
