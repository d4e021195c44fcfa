"""A front-end process's side of the engine: the catalog it announces, and requests sent to its batchers.

Request tensors are written once into this front end's arena (the engine reads
them in place); outputs come back in the arena the engine keeps for this front
end and are copied out at once, so both arenas' slots are freed by their owners.
Every request gets exactly one answer from the engine, also when cancelled.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from batching import BatcherClosed, DeadlineExceeded, InvalidRequest, QueueFull

from .ipc.arena import Arena, tensor_bytes
from .ipc.channel import Channel, Notice
from .repository import ModelCatalog, ModelNotFound, ModelNotReady, ModelVersion
from .runtime import WorkerCrashed
from .settings import Settings
from .vocabulary import InvalidInput

log = logging.getLogger(__name__)
_KNOWN_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls for cls in (QueueFull, DeadlineExceeded, BatcherClosed, InvalidRequest, InvalidInput,
                                  WorkerCrashed, ModelNotReady, ModelNotFound)
}
_MODEL_ERRORS: dict[str, type[Exception]] = {}


def rebuild_error(kind: str, text: str) -> Exception:
    """The engine's exception as the same type here, so errors map to the same status and message."""
    cls = _KNOWN_ERRORS.get(kind)
    if cls is None:  # the model's own failure: keep its type name for the 500 message
        cls = _MODEL_ERRORS.setdefault(kind, type(kind, (RuntimeError,), {}))
    return cls(text)


class RemoteBatcher:
    """A version's batcher as seen from a front end: ``submit`` has the Batcher's signature."""

    def __init__(self, engine: EngineClient, name: str, version: int) -> None:
        self._engine, self._name, self._version = engine, name, version

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: int = 0,
                     timeout: float | None = None) -> dict[str, np.ndarray]:
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout  # the engine's batcher clock reads time.monotonic() too
        return await self._engine.submit(self._name, self._version, inputs, deadline, priority)

    async def close(self, drain: bool = True) -> None:
        """The engine drains its own queues."""


class RemoteCatalog(ModelCatalog):
    """The engine's catalog, replaced whole on each announcement; empty while the engine is away."""

    def __init__(self, engine: EngineClient, settings: Settings) -> None:
        super().__init__()
        self._engine = engine
        self._settings = settings

    def update(self, snapshot: dict[str, Any]) -> None:
        models: dict[str, dict[int, ModelVersion]] = {}
        for name, number, path, stamp, state, error, config, description in snapshot["versions"]:
            mv = ModelVersion(name, number, path, stamp, state, error, config, description=description)
            if description is not None:
                mv.batch_config = config.batch_config(self._settings, description.instances, description.batch_sizes)
                mv.batcher = RemoteBatcher(self._engine, name, number)
            models.setdefault(name, {})[number] = mv
        self._models = models
        self._configs = {name: config for name, config in snapshot["configs"].items() if config is not None}
        self._config_errors = dict(snapshot["config_errors"])

    def clear(self) -> None:
        self._models, self._configs, self._config_errors = {}, {}, {}

    async def sync(self) -> None:
        await self._engine.request("sync")


class EngineClient:
    """This front end's channel to the engine, reconnecting when the engine restarts."""

    def __init__(self, settings: Settings, socket_path: str, shm_prefix: str, index: int) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.index = index
        self.catalog = RemoteCatalog(self, settings)
        self.arena = Arena(f"{shm_prefix}in-{index}-{os.getpid()}", settings.frontend_arena_mb << 20, create=True)
        self._outputs: Arena | None = None
        self._channel: Channel | None = None
        self._pending: dict[int, tuple[asyncio.Future[Any] | None, int | None]] = {}
        self._ids = itertools.count()
        self._closing = False

    async def run(self) -> None:
        """Connect, and connect again whenever the engine goes away, until ``close``."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                _, channel = await loop.create_unix_connection(
                    lambda: Channel(self._on_notice, self._on_lost), self.socket_path)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self._channel = channel
            channel.send(("hello", self.index, os.getpid(), self.arena.name))
            await channel.closed

    def _on_lost(self) -> None:
        if self._channel is not None and not self._closing:
            log.error("the model engine went away; requests in flight fail with 503 until it is back")
        self._channel = None
        self.catalog.clear()
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if future is not None and not future.done():
                future.set_exception(WorkerCrashed("the model engine stopped while this request was in flight; "
                                                   "it is being restarted"))
        self.arena.free_all()
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None

    def _on_notice(self, notice: Notice) -> None:
        kind = notice[0]
        if kind == "result":
            _, rid, offset, layout, objects = notice
            future = self._finish(rid)
            if offset is not None:
                assert self._outputs is not None and self._channel is not None
                outputs = {name: view.copy() for name, view in self._outputs.read(layout).items()}
                self._channel.send(("free", [offset]))
                outputs.update(objects)
            else:
                outputs = objects
            if future is not None and not future.done():
                future.set_result(outputs)
        elif kind == "error":
            _, rid, error_kind, text = notice
            future = self._finish(rid)
            if future is not None and not future.done():
                future.set_exception(rebuild_error(error_kind, text))
        elif kind in ("synced", "metrics"):
            future = self._finish(notice[1])
            if future is not None and not future.done():
                future.set_result(notice[2] if len(notice) > 2 else None)
        elif kind == "catalog":
            self.catalog.update(notice[1])
        elif kind == "hello":
            self._outputs = Arena(notice[1])

    def _finish(self, rid: int) -> asyncio.Future[Any] | None:
        future, offset = self._pending.pop(rid, (None, None))
        if offset is not None:
            self.arena.free(offset)
        return future

    def _send(self, notice: Notice, offset: int | None = None) -> tuple[int, asyncio.Future[Any]]:
        if self._channel is None:
            if offset is not None:
                self.arena.free(offset)
            raise WorkerCrashed("the model engine is not connected (starting or restarting)")
        rid = notice[1]
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, offset)
        self._channel.send(notice)
        return rid, future

    async def submit(self, model: str, version: int, inputs: Mapping[str, np.ndarray], deadline: float | None,
                     priority: int) -> dict[str, np.ndarray]:
        offset = None
        layout: Any = []
        objects: Any = {name: arr for name, arr in inputs.items() if arr.dtype == object}
        needed = tensor_bytes(inputs)
        if needed:
            offset = self.arena.alloc(needed)
            if offset is None:
                raise QueueFull(f"this front end has {self.arena.used >> 20} MiB of request tensors in flight "
                                f"(frontend_arena_mb={self.settings.frontend_arena_mb}); retry shortly")
            layout, objects = self.arena.write(offset, inputs)
        rid, future = self._send(("submit", next(self._ids), model, version, layout, objects, deadline, priority),
                                 offset)
        try:
            return await future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            if rid in self._pending and self._channel is not None:
                self._pending[rid] = (None, offset)  # the slot is freed when the engine answers
                self._channel.send(("cancel", rid))
            raise

    async def request(self, kind: str) -> Any:
        """A control request (sync, metrics) and its answer."""
        _, future = self._send((kind, next(self._ids)))
        return await future

    async def close(self) -> None:
        self._closing = True
        if self._channel is not None:
            self._channel.close()
        self.arena.close()
