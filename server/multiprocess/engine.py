"""The model engine process: every model version's batcher and workers, fed by the front-end processes.

One queue per model version whatever the number of front ends, so queue limits,
priorities, deadlines and batch formation are exactly those of one process.
A front end writes a request's tensors into its own arena and sends a notice;
the engine submits views of them to the batcher, writes each request's outputs
into the arena it keeps for that front end and answers with a notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from batching import Batcher, Ticket
from server.ipc.arena import Arena, tensor_bytes
from server.ipc.channel import Channel, Notice
from server.models.lifecycle import serving_repository
from server.models.repository import ModelRepository, ModelVersion
from server.observability.metrics import Metrics
from server.settings import Settings

log = logging.getLogger(__name__)


def error_notice(rid: int, error: BaseException) -> tuple[Any, ...]:
    """An error for the front end to rebuild as the same type: its name, message and any retry delay."""
    return ("error", rid, type(error).__name__, str(error), getattr(error, "retry_after", None))


def catalog_snapshot(repository: ModelRepository | None) -> dict[str, Any]:
    """What a front end needs to route and describe requests: every version's state, config and description.

    ``scanned`` is false until the engine's first load of the repository has finished: front ends
    start listening only after that, as a single-process server does."""
    if repository is None:
        return {"scanned": False, "versions": [], "configs": {}, "config_errors": {}}
    versions = [(mv.name, mv.version, mv.path, mv.stamp, mv.state, mv.error, mv.config, mv.description)
                for name in repository.names() for mv in repository.versions(name)]
    configs = {name: repository.config_of(name) for name in repository.names()}
    errors = {name: error for name in repository.names() if (error := repository.config_error(name))}
    return {"scanned": True, "versions": versions, "configs": configs, "config_errors": errors,
            "empty_is_ready": repository.empty_is_ready}


class FrontEndLink:
    """The engine's side of one front end's channel: its requests in flight and its two arenas."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.channel = Channel(self.on_notice, self.on_lost)
        self.inputs: Arena | None = None
        self.outputs: Arena | None = None
        self.tickets: dict[int, tuple[Batcher, Ticket]] = {}  # requests in flight, by the front end's id
        self.tasks: set[asyncio.Task[None]] = set()

    def on_notice(self, notice: Notice) -> None:
        kind = notice[0]
        if kind == "submit":
            self._submit(*notice[1:])
        elif kind == "cancel":
            ticket = self.tickets.get(notice[1])
            if ticket is not None:
                ticket[0].cancel(ticket[1])
        elif kind == "free":
            assert self.outputs is not None
            for offset in notice[1]:
                self.outputs.free(offset)
        elif kind == "hello":
            self._hello(*notice[1:])
        elif kind == "sync":
            task = asyncio.get_running_loop().create_task(self._sync(notice[1]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind == "metrics":
            self.channel.send(("metrics", notice[1], list(self.engine.metrics.registry.collect())))
        elif kind in ("index", "load", "unload"):
            task = asyncio.get_running_loop().create_task(self._control(*notice))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _hello(self, index: int, pid: int, arena_name: str) -> None:
        self.inputs = Arena(arena_name)
        out_name = f"{self.engine.shm_prefix}out-{index}-{os.getpid()}"
        self.outputs = Arena(out_name, self.engine.settings.frontend_arena_mb << 20, create=True)
        self.channel.send(("hello", out_name))
        self.channel.send(("catalog", catalog_snapshot(self.engine.loaded_repository)))
        log.info("front end %d (pid %d) connected", index, pid)

    def _submit(self, rid: int, model: str, version: int, layout: Any, objects: dict[str, Any],
                deadline: float | None, priority: int, members: int) -> None:
        """Queue the request on its version's batcher; the answer goes out when its future resolves
        (a callback, not a task per request: the engine relays every front end's requests)."""
        mv = self.engine.repository.version(model, version)
        if mv is None or mv.batcher is None or not mv.ready:
            state = "gone" if mv is None else mv.state.value
            self.channel.send(("error", rid, "ModelNotReady", f"version {version} of model {model!r} is {state}"))
            return
        assert self.inputs is not None and isinstance(mv.batcher, Batcher)
        inputs = self.inputs.read(layout)
        inputs.update(objects)
        try:
            ticket = mv.batcher.enqueue(inputs, deadline=deadline, priority=priority, members=members)
        except Exception as error:
            self.channel.send(error_notice(rid, error))
            return
        self.tickets[rid] = (mv.batcher, ticket)
        ticket.future.add_done_callback(lambda future: self._answer(rid, future))

    def _answer(self, rid: int, future: asyncio.Future[dict[str, np.ndarray]]) -> None:
        self.tickets.pop(rid, None)
        if future.cancelled():
            self.channel.send(("error", rid, "CancelledError", "cancelled by the front end"))
            return
        error = future.exception()
        if error is not None:
            self.channel.send(error_notice(rid, error))
            return
        outputs = future.result()
        offset = self.outputs.alloc(tensor_bytes(outputs)) if self.outputs is not None else None
        if offset is None:  # the front end's output arena is full: the tensors ride in the notice this once
            self.channel.send(("result", rid, None, [], outputs))
            return
        assert self.outputs is not None
        layout, objects = self.outputs.write(offset, outputs)
        self.channel.send(("result", rid, offset, layout, objects))

    async def _sync(self, rid: int) -> None:
        await self.engine.repository.sync()
        self.channel.send(("synced", rid))

    async def _control(self, kind: str, rid: int, *args: Any) -> None:
        """A repository API call relayed by a front end: its result, or its error by type name and message.
        Every front end gets the changed catalog before the answer leaves, so the client's next request
        (to whichever front end) sees what it loaded or unloaded."""
        repository = self.engine.repository
        result: Any = None
        try:
            if kind == "index":
                result = await repository.index(*args)
            elif kind == "load":
                await repository.load_model(*args)
            else:
                await repository.unload_model(*args)
        except Exception as error:
            self.engine.announce_now()
            self.channel.send(("control", rid, None, type(error).__name__, str(error)))
            return
        if kind != "index":
            self.engine.announce_now()
        self.channel.send(("control", rid, result, None, None))

    def on_lost(self) -> None:
        """The front end went away: the requests it held are lost with it; their queue places are freed."""
        for batcher, ticket in list(self.tickets.values()):
            batcher.cancel(ticket)
        self.engine.links.discard(self)
        for arena in (self.inputs, self.outputs):
            if arena is not None:
                arena.close()


class Engine:
    def __init__(self, settings: Settings, socket_path: str, shm_prefix: str) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.shm_prefix = shm_prefix
        self.metrics = Metrics(CollectorRegistry(auto_describe=True))
        self.links: set[FrontEndLink] = set()
        self._repository: ModelRepository | None = None
        self._announce_scheduled = False

    @property
    def loaded_repository(self) -> ModelRepository | None:
        """The repository once its first load has finished, else None."""
        return self._repository

    @property
    def repository(self) -> ModelRepository:
        assert self._repository is not None
        return self._repository

    def _link(self) -> Channel:
        link = FrontEndLink(self)
        self.links.add(link)
        return link.channel

    def _announce(self, _: ModelVersion) -> None:
        """Tell every front end the catalog changed (once per event-loop turn)."""
        if self._announce_scheduled or self._repository is None:
            return
        self._announce_scheduled = True

        def send() -> None:
            self._announce_scheduled = False
            snapshot = catalog_snapshot(self.repository)
            for link in self.links:
                if link.outputs is not None:
                    link.channel.send(("catalog", snapshot))

        asyncio.get_running_loop().call_soon(send)

    def announce_now(self) -> None:
        """Send every front end the catalog at once (after a repository API call)."""
        snapshot = catalog_snapshot(self.repository)
        for link in self.links:
            if link.outputs is not None:
                link.channel.send(("catalog", snapshot))

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_unix_server(self._link, self.socket_path)
        async with serving_repository(self.settings, self.metrics, self._announce) as repository:
            self._repository = repository
            self._announce(None)  # type: ignore[arg-type]
            log.info("engine ready: models %s", repository.names())
            await stop.wait()
            log.info("engine draining")
        server.close()
        for link in list(self.links):
            link.channel.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        log.info("engine stopped: every accepted request answered")
