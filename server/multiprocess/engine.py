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
from collections.abc import AsyncIterator

import numpy as np
from prometheus_client import CollectorRegistry

from batching import Batcher, Ticket
from server.ipc.arena import Arena
from server.ipc.channel import Channel
from server.ipc.layout import layout_bytes, read_tensors, write_tensors
from server.models.catalog import ModelVersion
from server.models.lifecycle import serving_repository
from server.models.repository import ModelRepository
from server.multiprocess.messages import (
    Cancel,
    Catalog,
    CatalogVersion,
    Error,
    Free,
    Hello,
    Index,
    Load,
    Reply,
    Result,
    Scrape,
    Submit,
    Sync,
    Unload,
    Welcome,
    dispatcher,
)
from server.observability.engine_restarts import count_restarts
from server.observability.metrics import Metrics
from server.observability.process_series import parent
from server.observability.trace_context import numbers, off_wire
from server.observability.tracing import tracing
from server.runtime.worker_home import WorkerHome
from server.settings import Settings

log = logging.getLogger(__name__)


def catalog_snapshot(repository: ModelRepository | None) -> Catalog:
    """What a front end needs to route and describe requests: every version's state, config and description.

    ``scanned`` is false until the engine's first load of the repository has finished: front ends
    start listening only after that, as a single-process server does."""
    if repository is None:
        return Catalog(False, [], {}, {}, False)
    versions = [CatalogVersion(mv.name, mv.version, mv.path, mv.stamp, mv.state, mv.error, mv.config, mv.description)
                for name in repository.names() for mv in repository.versions(name)]
    configs = {name: repository.config_of(name) for name in repository.names()}
    errors = {name: error for name in repository.names() if (error := repository.config_error(name))}
    return Catalog(True, versions, configs, errors, repository.empty_is_ready, repository.strict_readiness)


class FrontEndLink:
    """The engine's side of one front end's channel: its requests in flight and its two arenas."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.channel = Channel(dispatcher({
            Submit: self._submit, Cancel: self._cancel, Free: self._free, Hello: self._hello,
            Sync: self._spawn, Scrape: self._scrape, Index: self._spawn, Load: self._spawn, Unload: self._spawn,
        }), self.on_lost)
        self.inputs: Arena | None = None
        self.outputs: Arena | None = None
        self.tickets: dict[int, tuple[Batcher, Ticket]] = {}  # requests in flight, by the front end's id
        self.hello: Hello | None = None  # the front end's index and pid, once it has said Hello
        self.tasks: set[asyncio.Task[None]] = set()

    def _hello(self, hello: Hello) -> None:
        self.hello = hello
        self.inputs = Arena(hello.arena)
        out_name = f"{self.engine.shm_prefix}out-{hello.frontend}-{os.getpid()}"
        self.outputs = Arena(out_name, self.engine.settings.frontend_arena_mb << 20, create=True)
        self.channel.send(Welcome(out_name))
        self.channel.send(catalog_snapshot(self.engine.loaded_repository))
        log.info("front end %d (pid %d) connected", hello.frontend, hello.pid)

    def _submit(self, submit: Submit) -> None:
        """Queue the request on its version's batcher; the answer goes out when its future resolves
        (a callback, not a task per request: the engine relays every front end's requests)."""
        rid = submit.rid
        mv = self.engine.repository.version(submit.model, submit.version)
        batcher = None if mv is None else mv.batchers.get(submit.signature) if submit.signature else mv.batcher
        if mv is None or batcher is None or not mv.ready:
            state = "gone" if mv is None else mv.state.value
            self.channel.send(Error(rid, "ModelNotReady", f"version {submit.version} of model {submit.model!r} "
                                                          f"is {state}", None))
            return
        assert self.inputs is not None and isinstance(batcher, Batcher)
        inputs = read_tensors(self.inputs.buf, submit.layout)
        inputs.update(submit.objects)
        trace = submit.trace  # traced or logged: its batch's spans and numbers; else None (no call)
        traced = None if trace is None else off_wire(trace)
        try:
            ticket = batcher.enqueue(inputs, deadline=submit.deadline, priority=submit.priority,
                                     members=submit.members, trace=traced,
                                     delivered=lambda outputs, error: self._answer(rid, outputs, error))
        except Exception as error:
            self.channel.send(Error.of(rid, error))
            return
        self.tickets[rid] = (batcher, ticket)

    def _cancel(self, cancel: Cancel) -> None:
        entry = self.tickets.pop(cancel.rid, None)  # there until answered
        if entry is not None:
            entry[0].cancel(entry[1])  # settled: no answer will come from its batch
            self.channel.send(Error(cancel.rid, "CancelledError", "cancelled by the front end", None))

    def _free(self, free: Free) -> None:
        assert self.outputs is not None
        for offset in free.offsets:
            self.outputs.free(offset)

    def _answer(self, rid: int, outputs: dict[str, np.ndarray] | None, error: BaseException | None) -> None:
        entry = self.tickets.pop(rid, None)
        if error is not None:
            self.channel.send(Error.of(rid, error))
            return
        assert self.outputs is not None and outputs is not None  # outputs set by Hello, the first message
        trace = None if entry is None else entry[1].trace
        batch = None if trace is None else numbers(trace)  # a traced or logged request's, for its span and line
        offset = self.outputs.alloc(layout_bytes(outputs))
        if offset is None:  # the front end's output arena is full: the tensors ride in the message this once
            self.channel.send(Result(rid, None, [], outputs, batch))
            return
        layout, objects = write_tensors(self.outputs.buf, offset, outputs)
        self.channel.send(Result(rid, offset, layout, objects, batch))

    def _scrape(self, scrape: Scrape) -> None:
        metrics = self.engine.metrics
        self.channel.send(Reply(scrape.rid, metrics.stats if scrape.stats else list(metrics.registry.collect())))

    def _spawn(self, request: Sync | Index | Load | Unload) -> None:
        task = asyncio.get_running_loop().create_task(self._control(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _control(self, request: Sync | Index | Load | Unload) -> None:
        """A repository call relayed by a front end: its Reply, or its Error. After a rescan, a load or an
        unload, every front end gets the changed catalog before the answer leaves, so the client's next
        request (to whichever front end) sees what it loaded, unloaded or relabelled."""
        repository = self.engine.repository
        answer: Reply | Error = Reply(request.rid, None)
        try:
            if isinstance(request, Sync):
                await repository.sync()
            elif isinstance(request, Index):
                answer = Reply(request.rid, await repository.index(request.ready_only))
            elif isinstance(request, Load):
                await repository.load_model(request.name, request.config)
            else:
                await repository.unload_model(request.name)
        except Exception as error:
            answer = Error.of(request.rid, error)
        if isinstance(request, Sync | Load | Unload):
            self.engine.announce_now()
        self.channel.send(answer)

    def on_lost(self) -> None:
        """The front end went away: the requests it held are lost with it; their queue places are freed."""
        for batcher, ticket in list(self.tickets.values()):
            batcher.cancel(ticket)
        self.tickets.clear()
        self.engine.links.discard(self)
        for arena in (self.inputs, self.outputs):
            if arena is not None:
                arena.close()


class Engine:
    def __init__(self, settings: Settings, socket_path: str, shm_prefix: str, restarts: int = 0,
                 workers_dir: str | None = None) -> None:
        """``restarts``: how many engines of this server stopped before this one (the supervisor counts);
        ``workers_dir``: where process workers outlive an engine, for the next one to adopt (the supervisor's)."""
        self.settings = settings
        self.home = WorkerHome(workers_dir) if workers_dir else None  # the orphans of the engine before, now
        self.socket_path = socket_path
        self.shm_prefix = shm_prefix
        self.metrics = Metrics(CollectorRegistry(auto_describe=True))
        self.metrics.processes.add(parent("supervisor"))  # and every front end's: one /metrics has them all
        self.metrics.processes.add(lambda: [("frontend", str(link.hello.frontend), link.hello.pid)
                                            for link in list(self.links) if link.hello is not None])
        count_restarts(self.metrics.registry, restarts)
        self.links: set[FrontEndLink] = set()
        self.loaded_repository: ModelRepository | None = None  # once its first load has finished
        self._announce_scheduled = False

    @property
    def repository(self) -> ModelRepository:
        assert self.loaded_repository is not None
        return self.loaded_repository

    def new_link(self) -> Channel:
        """The channel for a new front end's connection (the Unix server's protocol factory)."""
        link = FrontEndLink(self)
        self.links.add(link)
        return link.channel

    def _announce(self, _: ModelVersion | None) -> None:
        """Tell every front end the catalog changed (once per event-loop turn)."""
        if self._announce_scheduled or self.loaded_repository is None:
            return
        self._announce_scheduled = True

        def send() -> None:
            self._announce_scheduled = False
            self.announce_now()

        asyncio.get_running_loop().call_soon(send)

    def announce_now(self) -> None:
        """Send every front end (each that said Hello) the catalog at once."""
        snapshot = catalog_snapshot(self.repository)
        for link in self.links:
            if link.outputs is not None:
                link.channel.send(snapshot)

    @contextlib.asynccontextmanager
    async def loaded(self) -> AsyncIterator[ModelRepository]:
        """The repository loaded, and announced to every front end connected, until the block exits;
        then its queues drain (with tracing on, the spans of the last batches are sent once they have)."""
        with tracing(self.settings, "engine"):
            async with serving_repository(self.settings, self.metrics, self._announce, self.home) as repository:
                self.loaded_repository = repository
                repository.on_config_error = lambda: self._announce(None)  # front ends show it in status and ready
                self._announce(None)
                yield repository

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_unix_server(self.new_link, self.socket_path)
        async with self.loaded() as repository:
            log.info("engine ready: models %s", repository.names())
            await stop.wait()
            log.info("engine draining")
        server.close()
        for link in list(self.links):
            link.channel.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        log.info("engine stopped: every accepted request answered")
