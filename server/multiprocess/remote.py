"""A front-end process's side of the engine: its channel, and requests sent to its batchers (the catalog it
announces: server/multiprocess/catalog_view.py).

Request tensors are written once into this front end's arena (the engine reads
them in place); outputs come back in the arena the engine keeps for this front
end and are copied out at once, so both arenas' slots are freed by their owners.
Every request gets exactly one answer from the engine, also when cancelled. When the engine stops, the
requests it had and new ones wait for its replacement (server/multiprocess/hold.py).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from batching import PoisonInput, QueueFull
from server.ipc.arena import Arena
from server.ipc.channel import Channel
from server.ipc.layout import layout_bytes, read_tensors, write_rows, write_tensors
from server.multiprocess.catalog_view import RemoteCatalog
from server.multiprocess.hold import RestartHold
from server.multiprocess.messages import (
    Answered,
    Call,
    Cancel,
    Catalog,
    Error,
    Free,
    Hello,
    Reply,
    Result,
    Submit,
    Welcome,
    dispatcher,
    rebuild_error,
)
from server.observability.engine_restarts import HoldMetrics
from server.observability.trace_context import Measured, Traced, numbers, on_wire, told
from server.runtime import WorkerCrashed
from server.settings import Settings

log = logging.getLogger(__name__)
_Member = tuple[Mapping[str, np.ndarray], asyncio.Future[Any], Measured | None]  # a grouped request (logged: told)


class _RetryAlone(Exception):
    """A group member's answer when the engine refused its group as a whole: it is submitted again alone."""


class EngineClient:
    """This front end's channel to the engine, reconnecting when the engine restarts; requests wait in the
    restart hold while no engine is ready."""

    def __init__(self, settings: Settings, socket_path: str, shm_prefix: str, index: int) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.index = index
        self.catalog = RemoteCatalog(self, settings)
        self._receive = dispatcher({Result: self._result, Error: self._error, Reply: self._reply,
                                    Catalog: self._catalog, Welcome: self._welcome})
        self.arena = Arena(f"{shm_prefix}in-{index}-{os.getpid()}", settings.frontend_arena_mb << 20, create=True)
        self._outputs: Arena | None = None
        self._link: Channel | None = None  # connected to an engine: control calls go there
        self._channel: Channel | None = None  # the same once that engine has loaded its catalog: requests go there
        self._pending: dict[int, tuple[asyncio.Future[Any] | None, int | None, Answered]] = {}
        self.hold_metrics = HoldMetrics()
        self._hold = RestartHold(settings.engine_restart_hold_s, settings.engine_restart_hold_requests,
                                 self.hold_metrics, self.arena.free)
        self._started = time.monotonic()
        self._ids = itertools.count()
        self._freed: list[int] = []  # output slots copied out, for the engine to reuse
        self._groups: dict[tuple[Any, ...], list[_Member]] = {}
        self._traced: dict[int, Measured] = {}  # traced or logged requests and groups awaited, by id
        self._closing = False
        self.announced = asyncio.Event()  # set once the engine has announced the catalog of its first load

    async def run(self) -> None:
        """Connect, and connect again whenever the engine goes away, until ``close``."""
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                _, channel = await loop.create_unix_connection(self.new_channel, self.socket_path)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            await self.serve(channel)

    def new_channel(self) -> Channel:
        """A channel for a connection to the engine (the protocol factory); ``serve`` then uses it."""
        return Channel(self._receive, self._on_lost)

    async def serve(self, channel: Channel) -> None:
        """Send requests over ``channel``, connected to the engine, until it closes."""
        self._link = channel
        channel.send(Hello(self.index, os.getpid(), self.arena.name))
        await channel.closed

    def _on_lost(self) -> None:
        quiet = self._closing or self._channel is None  # (a link that never served: no news)
        self._link = self._channel = None
        pending, self._pending = self._pending, {}
        if self._hold.dropped(pending.values(), self.announced.is_set() and not self._closing, quiet):
            self.catalog.engine_stopped()
        else:
            self.catalog.clear()
        self._freed = []
        if self._outputs is not None:
            self._outputs.close()
            self._outputs = None

    def _result(self, result: Result) -> None:
        outputs = result.objects
        if result.offset is not None:
            assert self._outputs is not None
            outputs = read_tensors(self._outputs.buf, result.layout, copy=True)
            outputs.update(result.objects)
            if not self._freed:
                asyncio.get_running_loop().call_soon(self._send_freed)
            self._freed.append(result.offset)
        if self._traced:
            traced = self._traced.get(result.rid)
            if traced is not None:
                told(traced, result.batch)
        self._answer(result.rid, outputs)

    def _send_freed(self) -> None:
        """One Free for every output slot copied out this turn."""
        freed, self._freed = self._freed, []
        if freed and self._channel is not None:
            self._channel.send(Free(freed))

    def _error(self, error: Error) -> None:
        self._answer(error.rid, error=rebuild_error(error.error_type, error.text, error.retry_after))

    def _reply(self, reply: Reply) -> None:
        self._answer(reply.rid, reply.value)

    def _catalog(self, catalog: Catalog) -> None:
        if not catalog.scanned and self.catalog.restarting:
            return  # a new engine still loading: the last catalog routes requests to the hold meanwhile
        self.catalog.update(catalog)
        if not catalog.scanned:
            return
        if not self.announced.is_set():
            self._hold.expected_s = time.monotonic() - self._started  # what a restart is expected to take
            self.announced.set()
        self._channel = self._link
        if self._hold.since is not None:
            self._send_held()

    def _send_held(self) -> None:
        """The new engine is ready: every request that waited for it goes to it, once, in arrival order."""
        channel = self._channel
        assert channel is not None
        for entry in self._hold.ready():
            self._pending[entry.submit.rid] = (entry.future, entry.offset, entry.submit)
            channel.send(entry.submit)

    def _welcome(self, welcome: Welcome) -> None:
        self._outputs = Arena(welcome.arena)

    def _answer(self, rid: int, value: Any = None, error: BaseException | None = None) -> None:
        """Free request ``rid``'s slot and settle its future, unless its client left."""
        future, offset, _ = self._pending.pop(rid, (None, None, None))
        if offset is not None:
            self.arena.free(offset)
        if future is None or future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def _send(self, request: Submit, offset: int | None = None) -> tuple[int, asyncio.Future[Any]]:
        """Send a request to the engine's batchers, and the future of its answer; while no engine is ready,
        the request waits for one."""
        channel = self._channel
        if channel is None:
            return request.rid, self._hold.wait(request, offset)
        rid = request.rid
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, offset, request)
        channel.send(request)
        return rid, future

    async def submit(self, model: str, version: int, inputs: Mapping[str, np.ndarray], deadline: float | None,
                     priority: int, signature: str = "", trace: Measured | None = None) -> dict[str, np.ndarray]:
        """Run one request on the engine's batcher for (model, version, signature).

        Requests without a deadline of their own and without strings, arriving in the same
        event-loop turn for the same version, priority and row shape, travel as one group:
        one slot and one notice, one entry in the engine's queue (it relays every front end's
        requests, so its cost per entry bounds how far front ends scale). They would have
        shared a batch anyway; the engine counts waits and rejections per member, a group
        refused for a full queue is retried member by member, and a member whose client
        leaves is computed with its group and its answer dropped. A traced request (``trace``) goes alone,
        with its span's context; one only logged (a ``Measured``) is told its group's batch numbers.
        """
        if deadline is not None or isinstance(trace, Traced) or any(arr.dtype == object for arr in inputs.values()):
            return await self._submit_alone(model, version, inputs, deadline, priority, signature, trace)
        key = (model, version, priority, signature,
               tuple((name, arr.dtype.str, arr.shape[1:]) for name, arr in inputs.items()))
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        if not self._groups:
            asyncio.get_running_loop().call_soon(self._send_groups)
        self._groups.setdefault(key, []).append((inputs, future, trace))
        try:
            return await future
        except _RetryAlone:
            return await self._submit_alone(model, version, inputs, None, priority, signature, trace)

    async def _submit_alone(self, model: str, version: int, inputs: Mapping[str, np.ndarray],
                            deadline: float | None, priority: int, signature: str = "", trace: Measured | None = None
                            ) -> dict[str, np.ndarray]:
        rid, future = self._send_request(model, version, [inputs], deadline, priority, signature, trace)
        if trace is not None:
            self._traced[rid] = trace  # while it is awaited (sent again after an engine restart: the same id)
        try:
            return await future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            entry = self._pending.get(rid)
            if entry is not None and self._channel is not None:
                self._pending[rid] = (None, entry[1], entry[2])  # the slot is freed when the engine answers
                self._channel.send(Cancel(rid))
            else:
                self._hold.left(rid)  # waiting for the engine: forgotten, its slot freed
            raise
        finally:
            if trace is not None:
                del self._traced[rid]

    def _send_request(self, model: str, version: int, parts: list[Mapping[str, np.ndarray]],
                      deadline: float | None, priority: int, signature: str = "", trace: Measured | None = None
                      ) -> tuple[int, asyncio.Future[Any]]:
        """Write the parts' rows, in order, into one slot and send one submit notice for them."""
        offset = None
        needed = sum(layout_bytes(part) for part in parts)
        if needed:
            offset = self.arena.alloc(needed)
            if offset is None:
                raise QueueFull(f"this front end has {self.arena.used >> 20} MiB of request tensors in flight "
                                f"(frontend_arena_mb={self.settings.frontend_arena_mb}); retry shortly")
            if len(parts) == 1:
                layout, objects = write_tensors(self.arena.buf, offset, parts[0])
            else:  # a group: numeric tensors only
                layout, objects = write_rows(self.arena.buf, offset, parts), {}
        else:
            layout, objects = [], {name: arr for name, arr in parts[0].items() if arr.dtype == object}
        return self._send(Submit(next(self._ids), model, version, layout, objects, deadline, priority, len(parts),
                                 signature, None if trace is None else on_wire(trace)), offset)

    def _send_groups(self) -> None:
        groups, self._groups = self._groups, {}
        for (model, version, priority, signature, _), members in groups.items():
            live = [member for member in members if not member[1].done()]
            if not live:
                continue
            measured = Measured() if any(line is not None for _, _, line in live) else None  # a member is logged
            try:
                rid, group = self._send_request(model, version, [inputs for inputs, _, _ in live], None, priority,
                                                signature, measured)
            except Exception as error:
                for _, future, _ in live:
                    if not future.done():
                        future.set_exception(error)
                continue
            if measured is not None:
                self._traced[rid] = measured
            group.add_done_callback(functools.partial(self._answer_group, members=live, rid=rid))

    def _answer_group(self, group: asyncio.Future[Any], members: list[_Member], rid: int) -> None:
        batch = numbers(self._traced.pop(rid, None)) if self._traced else None
        error = group.exception()
        # As many as fit, exactly as one by one; a poison row among them: the engine's quarantine
        # then refuses the request that holds it, and only that one.
        if isinstance(error, QueueFull | PoisonInput) and len(members) > 1:
            error = _RetryAlone()
        if error is not None:
            for _, future, _ in members:
                if not future.done():
                    future.set_exception(error)
            return
        outputs, start = group.result(), 0
        for inputs, future, line in members:
            if line is not None:
                told(line, batch)
            rows = next(iter(inputs.values())).shape[0]
            if not future.done():
                future.set_result({name: arr[start : start + rows] for name, arr in outputs.items()})
            start += rows

    async def call(self, request: type[Call], *args: Any) -> Any:
        """A control request (sync, the engine's metrics, the repository API) run by the engine: its
        Reply's value, or its Error raised."""
        link = self._link
        if link is None:
            raise WorkerCrashed("the model engine is not connected (starting or restarting)")
        message = request(next(self._ids), *args)
        future = asyncio.get_running_loop().create_future()
        self._pending[message.rid] = (future, None, message)
        link.send(message)
        return await future

    async def close(self) -> None:
        self._closing = True
        self._hold.fail_all("the front end stopped while this request waited for the model engine to restart")
        if self._link is not None:
            self._link.close()
        self.arena.close()
