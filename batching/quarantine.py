"""Rows that killed a worker on their own, refused for a while by a hash of their values.

A client that retries a request whose input crashes the model would otherwise
take every worker down again, one restart at a time. Rows are keyed by a
digest of their tensors (input names, dtypes, row shapes and bytes), so the
same input is recognised in any request it arrives in. The check costs nothing
while the quarantine is empty, which is the normal case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np


def row_digest(inputs: Mapping[str, np.ndarray], row: int) -> bytes:
    """A 16-byte digest of one row of every input (strings and bytes by value)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(inputs):
        value = inputs[name][row]
        array = np.asarray(value)
        digest.update(name.encode())
        digest.update(array.dtype.str.encode() + repr(array.shape).encode())
        if array.dtype == object:
            for item in array.reshape(-1):
                digest.update(item if isinstance(item, bytes) else repr(item).encode())
                digest.update(b"\0")
        else:
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()


class Quarantine:
    """Digests of poison rows and when each is released (on the batcher's clock)."""

    def __init__(self) -> None:
        self._until: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def add(self, digest: bytes, until: float) -> None:
        self._until[digest] = max(until, self._until.get(digest, until))

    def holds(self, inputs: Mapping[str, np.ndarray], rows: int, now: float) -> bool:
        """True if any of the request's rows is quarantined; released entries are dropped first."""
        if not self._until:
            return False
        for digest in [d for d, until in self._until.items() if until <= now]:
            del self._until[digest]
        return bool(self._until) and any(row_digest(inputs, r) in self._until for r in range(rows))
