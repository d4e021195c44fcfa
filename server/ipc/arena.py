"""A shared-memory arena: one writer allocates slots for tensors, the other side reads them in place.

A file in /dev/shm mapped by both processes (no resource tracker: the owner
removes it, and the supervisor removes what a killed process left). Slots are
power-of-two sized with a free list per size, so allocation is O(1) and a slot
freed by one request is reused by the next of similar size. Pages are touched
only as slots are first used.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SHM_DIR = Path("/dev/shm")
ALIGN = 64
MIN_SLOT_BITS = 12  # 4 KiB
Layout = list[tuple[str, str, tuple[int, ...], int]]  # name, dtype.str, shape, offset within the slot


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def tensor_bytes(tensors: Mapping[str, np.ndarray]) -> int:
    """Bytes a slot needs for the numeric tensors (strings travel in the notice)."""
    return sum(_aligned(a.nbytes) for a in tensors.values() if a.dtype != object)


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
            self._map = mmap.mmap(fd, self.size)
        finally:
            os.close(fd)
        self._owner = create
        self._top = 0
        self._free: dict[int, list[int]] = {}
        self._bits_of: dict[int, int] = {}
        self.used = 0

    # ---- the writer's side -------------------------------------------------------

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

    def write(self, offset: int, tensors: Mapping[str, np.ndarray]) -> tuple[Layout, dict[str, np.ndarray]]:
        """Copy numeric tensors into the slot at ``offset``; return their layout and the string tensors."""
        layout: Layout = []
        objects: dict[str, np.ndarray] = {}
        position = offset
        for name, arr in tensors.items():
            if arr.dtype == object:
                objects[name] = arr
                continue
            np.ndarray(arr.shape, arr.dtype, buffer=self._map, offset=position)[...] = arr
            layout.append((name, arr.dtype.str, tuple(arr.shape), position))
            position += _aligned(arr.nbytes)
        return layout, objects

    def write_rows(self, offset: int, parts: list[Mapping[str, np.ndarray]]) -> tuple[Layout, dict[str, np.ndarray]]:
        """Like ``write`` for the row-wise concatenation of ``parts`` (numeric tensors, equal row shapes),
        copied straight into the slot."""
        layout: Layout = []
        position = offset
        for name, first in parts[0].items():
            rows = sum(part[name].shape[0] for part in parts)
            shape = (rows, *first.shape[1:])
            np.concatenate([part[name] for part in parts], out=np.ndarray(shape, first.dtype, buffer=self._map,
                                                                           offset=position))
            layout.append((name, first.dtype.str, shape, position))
            position += _aligned(first.itemsize * int(np.prod(shape)))
        return layout, {}

    # ---- the reader's side -------------------------------------------------------

    def read(self, layout: Layout) -> dict[str, np.ndarray]:
        """Views of the tensors in place: valid until the writer reuses the slot."""
        return {name: np.ndarray(shape, np.dtype(dtype), buffer=self._map, offset=position)
                for name, dtype, shape, position in layout}

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
