"""One queued request as the batcher keeps it, and the slices of it that go into batches."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from .tensors import Tensors


class Request:
    __slots__ = (
        "arrival",
        "deadline",
        "done_rows",
        "future",
        "inputs",
        "key",
        "members",
        "parts",
        "priority",
        "rows",
        "seq",
        "taken",
        "trace",
    )

    def __init__(self, inputs: Tensors, rows: int, key: Hashable, priority: int,
                 deadline: float | None, arrival: float, seq: int,
                 future: asyncio.Future[Tensors], members: int = 1, trace: object = None) -> None:
        self.inputs = inputs
        self.trace = trace  # a sampled request's tracing context (the observer's batch_traced reads it), else None
        self.members = members  # client requests carried (a front end's group), for the observer
        self.rows = rows
        self.key = key
        self.priority = priority
        self.deadline = deadline
        self.arrival = arrival
        self.seq = seq
        self.future = future
        self.taken = 0  # rows already placed in batches
        self.done_rows = 0  # rows whose outputs came back
        self.parts: list[tuple[int, Tensors]] = []


Segment = tuple[Request, int, int]  # request, first row, row count
