"""A front end whose engine dies: the requests it had and new ones wait in the restart hold and go to the next
engine once, in arrival order (server/multiprocess/hold.py). A real Engine on synthetic models and a front
end's EngineClient over socketpairs (tests/unit/test_engine_link.py); a "restart" is a second Engine, loaded
or still loading, joined to the same front end."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from batching import DeadlineExceeded
from server.core.errors import classify, retry_after
from server.ipc.arena import remove_leftovers
from server.ipc.channel import Channel
from server.multiprocess import messages
from server.multiprocess.engine import Engine
from server.multiprocess.hold import EngineRestarting
from server.runtime import WorkerCrashed
from tests.observe import until

from .test_engine_link import Link, abort, features, link_repository, linked


class NextEngine:
    """A replacement engine joined to the link's front end; it records the request ids of every Submit it gets."""

    def __init__(self, link: Link, name: str) -> None:
        self.link = link
        self.engine = Engine(link.engine.settings, "unused.sock", f"{link.engine.shm_prefix}{name}-")
        self.submitted: list[int] = []
        self.side: Channel | None = None
        self._serving: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX)

        def new_link() -> Channel:
            channel = self.engine.new_link()
            receive = channel._on_message

            def spy(wire: tuple[Any, ...]) -> None:
                if wire[-1] == "submit":
                    self.submitted.append(wire[0])
                receive(wire)

            channel._on_message = spy
            return channel

        _, self.side = await loop.connect_accepted_socket(new_link, ours)
        _, client_side = await loop.create_unix_connection(self.link.client.new_channel, sock=theirs)
        self._serving = asyncio.create_task(self.link.client.serve(client_side))

    def kill(self) -> None:
        assert self.side is not None
        abort(self.side)

    async def stop(self) -> None:
        if self.side is not None and self.side.transport is not None:
            self.side.close()
        if self._serving is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._serving, 5)
        remove_leftovers(self.engine.shm_prefix)


@contextlib.asynccontextmanager
async def restarted(link: Link, name: str = "next", load: bool = True) -> AsyncIterator[NextEngine]:
    """A new engine for the link's front end (with ``load``: its repository loaded before it is joined)."""
    engine = NextEngine(link, name)
    try:
        if load:
            async with engine.engine.loaded():
                await engine.connect()
                try:
                    yield engine
                finally:
                    link.release()  # its queues drain next
        else:
            yield engine
    finally:
        await engine.stop()


def gauge(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(name) or 0.0


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return link_repository(tmp_path)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def dead(link: Link, registry: CollectorRegistry, waiting: int) -> None:
    link.client.hold_metrics.register(registry)
    abort(link.engine_side)
    await until(lambda: link.client.catalog.restarting, "the front end sees the engine gone")
    await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == waiting,
                f"{waiting} requests waiting for the next engine")


async def test_requests_in_flight_go_once_to_the_next_engine_in_arrival_order(
        repository: Path, registry: CollectorRegistry) -> None:
    async with linked(repository) as link:
        link.hold()
        in_batch = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(link.held, "a batch at the gate")
        queued = [asyncio.ensure_future(link.client.submit("syn", 1, features(v), 1e12, 0)) for v in (2.0, 3.0)]
        grouped = [asyncio.ensure_future(link.client.submit("syn", 1, features(v), None, 0)) for v in (4.0, 5.0)]
        await until(lambda: len(link.frontend.tickets) == 4, "four queue entries at the engine (one a group)")
        answered = await link.client.submit("words", 1, {"text": np.array([[b"x"]], dtype=object),
                                                         **features(6.0)}, None, 0)
        sync = asyncio.ensure_future(link.client.call(messages.Sync))
        await dead(link, registry, 5)  # requests: the group's two count
        with pytest.raises(WorkerCrashed, match="in flight"):  # a control call is not sent again
            await sync
        assert not link.client.catalog.ready and link.client.catalog.get("syn").ready  # routes to the hold
        new = asyncio.ensure_future(link.client.submit("syn", 1, features(7.0), 1e12, 0))
        await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == 6, "a new request held")
        assert link.client.arena.used == 5 * 4096  # every waiting entry's tensors stay in the arena
        link.release()
        async with restarted(link) as engine:
            results = await asyncio.gather(in_batch, *queued, *grouped, new)
            assert [float(out["total"][0, 0]) for out in results] == [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]
            assert engine.submitted == sorted(set(engine.submitted)) and len(engine.submitted) == 5
            assert link.client.catalog.ready
            await until(lambda: link.client.arena.used == 0, "every slot freed")
        assert float(answered["total"][0, 0]) == 6.0  # answered before the drop: never sent again
        assert gauge(registry, "batchserve_engine_replayed_requests_total") == 5
        assert gauge(registry, "batchserve_engine_held_requests_total") == 1
        assert gauge(registry, "batchserve_engine_waiting_requests") == 0


async def test_an_engine_still_loading_gets_nothing_until_its_catalog_is_announced(
        repository: Path, registry: CollectorRegistry) -> None:
    async with linked(repository) as link:
        await dead(link, registry, 0)
        async with restarted(link, load=False) as engine:
            await engine.connect()
            await until(lambda: link.client._link is not None, "the front end joined to the loading engine")
            request = asyncio.ensure_future(link.client.submit("syn", 1, features(8.0), 1e12, 0))
            await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == 1, "the request held")
            assert engine.submitted == [] and not request.done()
            async with engine.engine.loaded():
                assert float((await request)["total"][0, 0]) == 8.0
                assert len(engine.submitted) == 1


async def test_the_hold_refuses_past_its_count_and_its_time_and_expires_deadlines(
        repository: Path, registry: CollectorRegistry) -> None:
    async with linked(repository, engine_restart_hold_s=0.5, engine_restart_hold_requests=2) as link:
        await dead(link, registry, 0)
        dropped = time.monotonic()
        waits = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), None, 0))
        short = asyncio.ensure_future(link.client.submit("syn", 1, features(2.0), time.monotonic() + 0.1, 0))
        await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == 2, "two requests held")
        with pytest.raises(EngineRestarting, match="2 requests already wait") as full:
            await link.client.submit("syn", 1, features(3.0), None, 0)
        # 503 at once, Retry-After: the time the engine is expected back (as long as its first start took)
        assert classify(full.value).status == 503
        assert full.value.retry_after <= link.client._hold.expected_s  # type: ignore[attr-defined]
        with pytest.raises(DeadlineExceeded, match="deadline passed while it waited"):
            await short
        assert classify(DeadlineExceeded()).status == 504
        with pytest.raises(EngineRestarting, match=r"waited 0\.5 s for it") as waited:
            await waits
        assert time.monotonic() - dropped >= 0.5 and classify(waited.value).status == 503
        assert retry_after(waited.value) is not None
        assert link.client.arena.used == 0
        assert gauge(registry, "batchserve_engine_held_requests_total") == 2


async def test_a_client_that_leaves_during_the_hold_is_forgotten(repository: Path, registry: CollectorRegistry) -> None:
    async with linked(repository) as link:
        await dead(link, registry, 0)
        leaving = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        staying = asyncio.ensure_future(link.client.submit("syn", 1, features(2.0), 1e12, 0))
        await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == 2, "two requests held")
        leaving.cancel()
        await until(lambda: link.client.arena.used == 4096, "the leaving request's slot freed")
        async with restarted(link) as engine:
            assert float((await staying)["total"][0, 0]) == 2.0
            assert len(engine.submitted) == 1


async def test_a_request_in_flight_at_every_restart_is_sent_twice_not_three_times(
        repository: Path, registry: CollectorRegistry) -> None:
    async with linked(repository, warmup=False) as link:  # (a warm-up would wait at the gate)
        link.hold()
        request = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(link.held, "a batch at the gate")
        await dead(link, registry, 1)
        for name, sent in (("second", 1.0), ("third", 2.0)):
            link.hold()  # the request is in a batch again when this engine dies
            async with restarted(link, name) as engine:
                await until(lambda: engine.submitted, f"the request sent to the {name} engine")
                assert gauge(registry, "batchserve_engine_replayed_requests_total") == sent
                engine.kill()
                if name == "second":
                    await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == 1, "held again")
                    continue
                with pytest.raises(EngineRestarting, match="stopped 3 times in a row"):
                    await request
        assert link.client.arena.used == 0


async def test_a_front_end_that_stops_fails_what_waits(repository: Path, registry: CollectorRegistry) -> None:
    async with linked(repository) as link:
        await dead(link, registry, 0)
        request = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(lambda: gauge(registry, "batchserve_engine_waiting_requests") == 1, "the request held")
        await link.client.close()
        with pytest.raises(EngineRestarting, match="front end stopped"):
            await request
