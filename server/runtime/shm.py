"""Tensors through shared memory: the parent writes a batch once, the worker reads it in place.

A message carries only a layout (name, dtype, shape, offset per tensor); string
tensors, which have no fixed-size layout, ride in the message itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from multiprocessing import shared_memory

import numpy as np

ALIGN = 64
Layout = list[tuple[str, str, tuple[int, ...], int]]  # name, dtype.str, shape, offset


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def bytes_needed(tensors: Mapping[str, np.ndarray]) -> int:
    return sum(_aligned(a.nbytes) for a in tensors.values() if a.dtype != object)


def write_tensors(block: shared_memory.SharedMemory, tensors: Mapping[str, np.ndarray]
          ) -> tuple[Layout, dict[str, np.ndarray]]:
    """Copy numeric tensors into ``block``; return their layout and the string tensors left over."""
    layout: Layout = []
    objects: dict[str, np.ndarray] = {}
    offset = 0
    for name, arr in tensors.items():
        if arr.dtype == object:
            objects[name] = arr
            continue
        view = np.ndarray(arr.shape, arr.dtype, buffer=block.buf, offset=offset)
        view[...] = arr
        layout.append((name, arr.dtype.str, tuple(arr.shape), offset))
        offset += _aligned(arr.nbytes)
    return layout, objects


def read_tensors(block: shared_memory.SharedMemory, layout: Layout, copy: bool) -> dict[str, np.ndarray]:
    """Arrays described by ``layout``: views into the block, or copies that outlive its next use."""
    result = {}
    for name, dtype, shape, offset in layout:
        view = np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=offset)
        result[name] = view.copy() if copy else view
    return result


def attach_block(name: str) -> shared_memory.SharedMemory:
    """Open a block the parent created. Spawned workers share the parent's resource tracker,
    so the (Python < 3.13) registration on attach is the parent's own entry and needs no undoing."""
    return shared_memory.SharedMemory(name=name)


def create_block(size: int) -> shared_memory.SharedMemory:
    return shared_memory.SharedMemory(create=True, size=max(ALIGN, size))


def release_block(block: shared_memory.SharedMemory | None, unlink: bool) -> None:
    if block is None:
        return
    try:
        block.close()
        if unlink:
            block.unlink()
    except (FileNotFoundError, BufferError):
        pass

