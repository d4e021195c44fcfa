"""Shared-memory blocks for process workers: the parent writes a batch once, the worker reads it in place.

What lies in a block, and where, is ``server.ipc.layout``'s one layout (the
same as in a front end's arena): a message carries only the layout, and string
tensors, which have no fixed-size layout, ride in the message itself.
"""

from __future__ import annotations

from multiprocessing import shared_memory

from server.ipc.layout import ALIGN


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
