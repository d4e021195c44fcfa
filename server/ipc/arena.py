"""A shared-memory arena: one writer allocates slots for tensors, the other side reads them in place.

Both sides read and write a slot's tensors with ``server.ipc.layout``'s functions on ``Arena.buf``.

A file in /dev/shm mapped by both processes (no resource tracker: the owner
removes it, and the supervisor removes what a killed process left). Slots are
power-of-two sized with a free list per size, so allocation is O(1) and a slot
freed by one request is reused by the next of similar size. Pages are touched
only as slots are first used.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

SHM_DIR = Path("/dev/shm")
MIN_SLOT_BITS = 12  # 4 KiB


class Arena:
    """One mapped region; ``create=True`` makes it (the owner), else attaches to the owner's."""

    def __init__(self, name: str, size: int = 0, create: bool = False) -> None:
        self.name = name
        self.path = SHM_DIR / name
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            self.size = os.fstat(fd).st_size
            self.buf = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self._owner = create
        self._top = 0
        self._free: dict[int, list[int]] = {}
        self._bits_of: dict[int, int] = {}
        self.used = 0

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a slot of at least ``nbytes``, or None when the arena is full."""
        bits = max(MIN_SLOT_BITS, (max(nbytes, 1) - 1).bit_length())
        free = self._free.get(bits)
        if free:
            offset = free.pop()
        elif self._top + (1 << bits) <= self.size:
            offset, self._top = self._top, self._top + (1 << bits)
        else:
            return None
        self._bits_of[offset] = bits
        self.used += 1 << bits
        return offset

    def free(self, offset: int) -> None:
        bits = self._bits_of.pop(offset)
        self.used -= 1 << bits
        self._free.setdefault(bits, []).append(offset)

    def free_all(self) -> None:
        """Forget every slot (the reader is gone)."""
        for offset in list(self._bits_of):
            self.free(offset)

    def close(self) -> None:
        """Remove the file if this side owns it. The mapping itself is never closed by hand: numpy
        views of it do not pin it, and reading a view of an unmapped region crashes the process.
        It is unmapped when the last view (each holds the mmap as its base) is gone."""
        if self._owner:
            self.path.unlink(missing_ok=True)


def remove_leftovers(prefix: str) -> None:
    """Remove arenas whose names start with ``prefix`` (left by killed processes)."""
    for path in SHM_DIR.glob(f"{prefix}*"):
        path.unlink(missing_ok=True)
