"""The batcher's queue: requests waiting for a batch, with the counts its rules read in O(1).

Kept apart from the batch loop so the loop reads as its rules (when to dispatch, whom to
fail, what to do with a lost batch) and the bookkeeping has one owner: rows queued in
all, per shape key (what may share a batch) and per priority (for SLO admission), and a
heap of deadlines whose entries for requests that already left are dropped lazily.
Queue order: higher effective priority first, then earliest deadline, then arrival. The
effective priority is the request's own; with ``priority_aging`` set, plus one level per
``priority_aging`` seconds waited (up to the top level).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable, Iterator

from .config import BatchConfig
from .request import Request, Segment


class RequestQueue:
    """Queued requests in arrival order, with rows counted by shape key and priority."""

    SCAN_LIMIT = 256  # rows_ahead counts exactly up to this many queued requests

    def __init__(self, config: BatchConfig) -> None:
        self.config = config
        self.pending: dict[int, Request] = {}  # insertion (arrival) ordered
        self.rows = 0
        self.rows_by_key: dict[Hashable, int] = {}
        self.rows_by_priority = [0] * config.priority_levels
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self.pending)

    def __contains__(self, request: Request) -> bool:
        return request.seq in self.pending

    def requests(self) -> list[Request]:
        return list(self.pending.values())

    def add(self, request: Request) -> None:
        self.pending[request.seq] = request
        self.rows_by_key[request.key] = self.rows_by_key.get(request.key, 0) + request.rows
        self.rows += request.rows
        self.rows_by_priority[request.priority] += request.rows
        if request.deadline is not None:
            heapq.heappush(self._deadlines, (request.deadline, request.seq))

    def remove(self, request: Request, rows: int | None = None) -> None:
        """Take rows (default: all remaining) of a queued request off the queue."""
        remaining = request.rows - request.taken
        rows = remaining if rows is None else rows
        self.rows -= rows
        self.rows_by_priority[request.priority] -= rows
        left = self.rows_by_key[request.key] - rows
        if left:
            self.rows_by_key[request.key] = left
        else:
            del self.rows_by_key[request.key]
        if rows == remaining:
            del self.pending[request.seq]

    def earliest_deadline(self) -> float | None:
        """The earliest deadline of a queued request (of any shape or priority)."""
        heap = self._deadlines
        while heap and heap[0][1] not in self.pending:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def due(self, until: float) -> Iterator[Request]:
        """Queued requests whose deadline is at or before ``until``, earliest first; the caller
        takes each off the queue before asking for the next."""
        heap = self._deadlines
        while heap and heap[0][0] <= until:
            _, seq = heapq.heappop(heap)
            request = self.pending.get(seq)
            if request is not None:
                yield request

    def order(self, now: float) -> Callable[[Request], tuple[int, float, int]]:
        """The sort key of the queue's order at ``now``."""
        top = self.config.priority_levels - 1
        aging = self.config.priority_aging

        def key(r: Request) -> tuple[int, float, int]:
            if not top or aging is None:
                level = r.priority
            else:
                level = min(top, r.priority + int((now - r.arrival) / aging))
            return (-level, math.inf if r.deadline is None else r.deadline, r.seq)

        return key

    def head(self, now: float) -> tuple[Hashable, int, float]:
        """The next batch's shape key (the first request's in queue order), its rows queued and the
        arrival of the oldest of them. The queue must not be empty."""
        if len(self.rows_by_key) == 1:
            first = next(iter(self.pending.values()))
            return first.key, self.rows, first.arrival
        key = min(self.pending.values(), key=self.order(now)).key
        oldest = next(r.arrival for r in self.pending.values() if r.key == key)
        return key, self.rows_by_key[key], oldest

    def rows_below(self, priority: int) -> int:
        """Queued rows of a lower priority than ``priority``."""
        return sum(self.rows_by_priority[:priority]) if priority else 0

    def rows_ahead(self, priority: int, deadline: float, now: float) -> int:
        """Queued rows that the queue's order puts before a new request with this priority and deadline
        (counted for a queue of up to SCAN_LIMIT requests; beyond, in O(levels): the rows of its
        priority and above, ignoring aging (when set) and deadlines within a level)."""
        if len(self.pending) > self.SCAN_LIMIT:
            return sum(self.rows_by_priority[priority:])
        order = self.order(now)
        mine = (-priority, deadline, math.inf)
        return sum(r.rows - r.taken for r in self.pending.values() if order(r) < mine)

    def take(self, key: Hashable, rows: int, now: float) -> list[Segment]:
        """Up to ``rows`` rows of shape ``key`` in queue order, off the queue, as batch segments."""
        candidates = sorted((r for r in self.pending.values() if r.key == key), key=self.order(now))
        segments: list[Segment] = []
        for request in candidates:
            if rows == 0:
                break
            n = min(rows, request.rows - request.taken)
            segments.append((request, request.taken, n))
            self.remove(request, n)
            request.taken += n
            rows -= n
        return segments
