"""The one layout of tensors in a shared buffer: where each numeric tensor lies, and how to read it back.

A writer copies numeric tensors into a buffer both processes map (an Arena's
slot, a worker's shared-memory block) and sends only their layout: a list of
``(name, dtype.str, shape, offset)`` with byte offsets into the buffer, each
tensor starting on a 64-byte boundary. String tensors have no fixed-size form:
they are handed back to the writer, to ride in the message itself. Layout
entries are plain tuples because they cross the wire with every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ALIGN = 64
Placement = tuple[str, str, tuple[int, ...], int]  # name, dtype.str, shape, byte offset in the buffer
Layout = list[Placement]
Buffer = Any  # what np.ndarray(buffer=...) accepts and can write through: mmap.mmap, memoryview


def aligned(nbytes: int) -> int:
    return (nbytes + ALIGN - 1) // ALIGN * ALIGN


def layout_bytes(tensors: Mapping[str, np.ndarray]) -> int:
    """Bytes the numeric tensors take in a buffer (string tensors take none)."""
    return sum(aligned(a.nbytes) for a in tensors.values() if a.dtype != object)


def write_tensors(buffer: Buffer, start: int, tensors: Mapping[str, np.ndarray]
                  ) -> tuple[Layout, dict[str, np.ndarray]]:
    """Copy the numeric tensors into ``buffer`` from byte ``start`` on; return their layout and the
    string tensors, which are not written."""
    layout: Layout = []
    objects: dict[str, np.ndarray] = {}
    position = start
    for name, arr in tensors.items():
        if arr.dtype == object:
            objects[name] = arr
            continue
        np.ndarray(arr.shape, arr.dtype, buffer=buffer, offset=position)[...] = arr
        layout.append((name, arr.dtype.str, tuple(arr.shape), position))
        position += aligned(arr.nbytes)
    return layout, objects


def write_rows(buffer: Buffer, start: int, parts: list[Mapping[str, np.ndarray]]) -> Layout:
    """Like ``write_tensors`` for the row-wise concatenation of ``parts`` (numeric tensors with equal
    row shapes), copied straight into the buffer: the layout of one tensor per name."""
    layout: Layout = []
    position = start
    for name, first in parts[0].items():
        shape = (sum(part[name].shape[0] for part in parts), *first.shape[1:])
        np.concatenate([part[name] for part in parts],
                       out=np.ndarray(shape, first.dtype, buffer=buffer, offset=position))
        layout.append((name, first.dtype.str, shape, position))
        position += aligned(first.itemsize * int(np.prod(shape)))
    return layout


def read_tensors(buffer: Buffer, layout: Layout, copy: bool = False) -> dict[str, np.ndarray]:
    """The tensors ``layout`` describes: views of the buffer (valid until the writer reuses their
    place), or copies that outlive it."""
    tensors = {name: np.ndarray(shape, np.dtype(dtype), buffer=buffer, offset=offset)
               for name, dtype, shape, offset in layout}
    return {name: arr.copy() for name, arr in tensors.items()} if copy else tensors
