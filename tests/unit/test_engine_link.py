"""The front end <-> engine link in one process over a socketpair: a real Engine on synthetic models (no
TensorFlow, no subprocess) and a front end's EngineClient, every message kind, cancellation, and a dead peer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pytest

from batching import Batcher, QueueFull
from server.ipc.arena import SHM_DIR, remove_leftovers
from server.ipc.channel import Channel
from server.ipc.layout import Layout
from server.models.catalog import ModelNotReady
from server.models.control import ModelControlError
from server.multiprocess import messages
from server.multiprocess.engine import Engine, FrontEndLink
from server.multiprocess.remote import EngineClient
from server.observability.trace_context import Measured
from server.runtime import WorkerCrashed
from server.settings import Settings
from tests.observe import synthetic_repository, until

MODELS = "syn,words,broken,tight"


def features(value: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"features": np.full((rows, 4), value, dtype=np.float32)}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return link_repository(tmp_path)


def link_repository(tmp_path: Path) -> Path:
    """``syn`` and ``tight`` wait at ``gate`` while it exists (one worker each); ``words`` has strings in and
    out; ``broken`` fails a batch holding a 13."""
    gate = tmp_path / "gate"
    root = synthetic_repository(tmp_path / "repo", gate, instances_per_device=1)

    def add(name: str, *args: Any, **overrides: Any) -> None:
        (synthetic_repository(tmp_path / name, *args, **overrides) / "syn").rename(root / name)

    add("tight", gate, instances_per_device=1, max_batch_size=1, max_queue_size=1)
    add("broken", synthetic={"base_ms": 0.0, "crash_on_value": 13.0})
    (root / "words" / "1").mkdir(parents=True)
    (root / "words" / "model.yaml").write_text(
        "backend: synthetic\nmax_batch_size: 4\nsynthetic: {base_ms: 0.0}\nsignature:\n"
        "  inputs: {text: {datatype: BYTES, shape: [-1, 1]}, features: {datatype: FP32, shape: [-1, 4]}}\n"
        "  outputs: {total: {datatype: FP32, shape: [-1, 1]}, echo: {datatype: BYTES, shape: [-1, 1]}}\n")
    return root


@dataclass
class Link:
    engine: Engine
    client: EngineClient
    engine_side: Channel  # the engine's end of the socketpair
    client_side: Channel
    gate: Path

    @property
    def frontend(self) -> FrontEndLink:
        (link,) = self.engine.links
        return link

    def hold(self) -> None:
        self.gate.touch()

    def release(self) -> None:
        self.gate.unlink(missing_ok=True)

    def held(self) -> bool:
        return Path(f"{self.gate}.held").exists()

    def queue(self, model: str) -> Batcher:
        """The engine's batcher for version 1 of ``model``."""
        mv = self.engine.repository.version(model, 1)
        assert mv is not None and isinstance(mv.batcher, Batcher)
        return mv.batcher


def abort(channel: Channel) -> None:
    """That end of the socket goes away at once, as when its process dies."""
    assert channel.transport is not None
    channel.transport.abort()


@contextlib.asynccontextmanager
async def linked(root: Path, load: bool = True, **overrides: Any) -> AsyncIterator[Link]:
    """An engine and a front end joined by a socketpair; with ``load``, the engine's repository loaded.
    ``overrides``: other Settings."""
    settings = Settings(model_repository=root, poll_interval=0, gc_freeze=False, frontend_arena_mb=8,
                        model_control_mode="explicit", load_models=MODELS, **overrides)
    prefix = f"batchserve-test-link-{os.getpid()}-{id(root)}-"
    loop = asyncio.get_running_loop()
    engine = Engine(settings, "unused.sock", prefix)
    client = EngineClient(settings, "unused.sock", prefix, 0)
    ours, theirs = socket.socketpair(socket.AF_UNIX)
    _, engine_side = await loop.connect_accepted_socket(engine.new_link, ours)
    _, client_side = await loop.create_unix_connection(client.new_channel, sock=theirs)
    serving = asyncio.create_task(client.serve(client_side))
    link = Link(engine, client, engine_side, client_side, root.parent / "gate")
    switch = sys.getswitchinterval()
    try:
        async with contextlib.AsyncExitStack() as stack:
            if load:
                await stack.enter_async_context(engine.loaded())
                async with asyncio.timeout(10):
                    await client.announced.wait()
            try:
                yield link
            finally:
                link.release()
                await client.close()
                await asyncio.wait_for(serving, 5)
    finally:
        sys.setswitchinterval(switch)
        remove_leftovers(prefix)


async def test_catalog_before_and_after_the_first_load(repository: Path) -> None:
    async with linked(repository, load=False) as link:
        # the Welcome and the unscanned catalog leave in one frame: the arena named is in place once both are in
        await until(lambda: link.client._outputs is not None, "the welcome and the first catalog received")
        assert not link.client.catalog.connected and not link.client.announced.is_set()
        with pytest.raises(ModelNotReady, match="starting or restarting"):
            link.client.catalog.get("syn")
        async with link.engine.loaded():
            async with asyncio.timeout(10):
                await link.client.announced.wait()
            mv = link.client.catalog.get("syn")
            assert mv.ready and mv.description is not None and mv.batcher is not None
            assert mv.signature.inputs["features"].shape == (-1, 4)
            assert sorted(link.client.catalog.names()) == sorted(MODELS.split(","))


async def test_results_through_the_arenas_alone_and_grouped(repository: Path) -> None:
    async with linked(repository) as link:
        batcher = link.client.catalog.get("syn").batcher
        assert batcher is not None
        alone = await batcher.submit(features(3.0, rows=2), timeout=30)  # a deadline of its own: alone
        np.testing.assert_array_equal(alone["total"], [[3.0], [3.0]])
        grouped = await asyncio.gather(*(batcher.submit(features(float(i))) for i in range(5)))
        assert [float(out["total"][0, 0]) for out in grouped] == [0.0, 1.0, 2.0, 3.0, 4.0]
        # every slot is back: the request's in this front end's arena, the answer's (Free) in the engine's
        await until(lambda: link.client.arena.used == 0 and link.frontend.outputs.used == 0, "slots freed")


async def test_a_logged_request_is_told_its_batchs_numbers_alone_and_in_a_group(repository: Path) -> None:
    async with linked(repository) as link:
        batcher = link.client.catalog.get("syn").batcher
        assert batcher is not None
        link.hold()  # the first batch holds the one worker; the rest queue behind it
        first = asyncio.ensure_future(batcher.submit(features(9.0)))
        await until(link.held, "the first batch held")
        logged, alone = Measured(), Measured()
        group = [asyncio.ensure_future(batcher.submit(features(1.0), trace=logged)),  # one turn: one group
                 asyncio.ensure_future(batcher.submit(features(2.0)))]
        single = asyncio.ensure_future(batcher.submit(features(3.0), timeout=30, trace=alone))  # a deadline: alone
        await until(lambda: link.queue("syn").queued_rows == 3, "three rows queued behind it")
        link.release()
        await asyncio.gather(first, *group, single)
        for measured in (logged, alone):  # one batch of three rows; base_ms 1 each
            assert measured.batch_size == 3 and measured.queue_s is not None and measured.queue_s > 0
            assert measured.compute_s is not None and measured.compute_s >= 0.001
        assert not link.client._traced  # nothing kept once answered


async def test_strings_ride_in_the_messages(repository: Path) -> None:
    async with linked(repository) as link:
        batcher = link.client.catalog.get("words").batcher
        assert batcher is not None
        text = np.array([[b"a"], [b"b"]], dtype=object)
        out = await batcher.submit({"text": text, **features(2.5, rows=2)})
        np.testing.assert_array_equal(out["total"], [[2.5], [2.5]])
        assert out["echo"].dtype == object and out["echo"].tolist() == [[b"2.5"], [b"2.5"]]


async def test_outputs_ride_in_the_result_when_the_output_arena_is_full(repository: Path) -> None:
    async with linked(repository) as link:
        outputs = link.frontend.outputs
        assert outputs is not None
        whole = outputs.alloc(outputs.size)
        assert whole is not None and outputs.alloc(1) is None
        out = await link.client.submit("syn", 1, features(7.0), None, 0)
        np.testing.assert_array_equal(out["total"], [[7.0]])
        outputs.free(whole)


async def test_errors_keep_their_type_message_and_retry_after(repository: Path) -> None:
    async with linked(repository) as link:
        with pytest.raises(ModelNotReady, match="version 9 of model 'syn' is gone"):
            await link.client.submit("syn", 9, features(1.0), None, 0)
        with pytest.raises(RuntimeError, match="synthetic crash") as failed:
            await link.client.submit("broken", 1, features(13.0), None, 0)
        assert type(failed.value).__name__ == "SyntheticError"
        link.hold()
        first = asyncio.ensure_future(link.client.submit("tight", 1, features(1.0), 1e12, 0))
        await until(link.held, "the first batch at the gate")
        second = asyncio.ensure_future(link.client.submit("tight", 1, features(2.0), 1e12, 0))
        await until(lambda: link.queue("tight").queued_rows == 1, "queued")
        with pytest.raises(QueueFull, match="max_queue_size=1") as full:
            await link.client.submit("tight", 1, features(3.0), 1e12, 0)
        assert isinstance(full.value.retry_after, float)
        link.release()
        assert [float(out["total"][0, 0]) for out in await asyncio.gather(first, second)] == [1.0, 2.0]


async def test_control_calls_answer_with_a_reply_or_an_error(repository: Path) -> None:
    async with linked(repository) as link:
        client = link.client
        assert await client.call(messages.Sync) is None
        families = await client.call(messages.Scrape)
        assert any(family.name.startswith("batchserve_") for family in families)
        assert {row["name"] for row in await client.catalog.index(ready_only=True)} == set(MODELS.split(","))
        await client.catalog.unload_model("words")  # the new catalog arrives before the answer
        assert "words" not in client.catalog.names()
        with pytest.raises(ModelControlError, match="invalid model name"):
            await client.catalog.load_model("../words")
        with pytest.raises(ModelControlError, match="'words' was not loaded"):  # config replaces model.yaml
            await client.catalog.load_model("words", {"max_batch_size": 2})
        await client.catalog.load_model("words")
        assert client.catalog.get("words").ready
        await client.catalog.sync()


async def test_a_cancelled_request_leaves_the_queue_and_is_still_answered(repository: Path) -> None:
    async with linked(repository) as link:
        link.hold()
        first = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(link.held, "the first batch at the gate")
        batcher = link.queue("syn")
        second = asyncio.ensure_future(link.client.submit("syn", 1, features(2.0), 1e12, 0))
        await until(lambda: batcher.queued_rows == 1, "the second request queued")
        second.cancel()
        # Cancel reaches the engine, its rows leave the queue, and the engine's answer frees its slot
        await until(lambda: batcher.queued_rows == 0 and len(link.frontend.tickets) == 1, "rows dequeued")
        await until(lambda: link.client.arena.used == 4096, "the cancelled request's slot freed")
        assert second.cancelled()
        link.release()
        np.testing.assert_array_equal((await first)["total"], [[1.0]])
        await until(lambda: link.client.arena.used == 0 and not link.frontend.tickets, "all answered")


async def test_without_a_restart_hold_a_dead_engine_fails_what_the_front_end_holds(repository: Path) -> None:
    async with linked(repository, engine_restart_hold_s=0) as link:
        link.hold()
        held = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(link.held, "a batch at the gate")
        queued = asyncio.ensure_future(link.client.submit("syn", 1, features(2.0), None, 0))
        await until(lambda: len(link.frontend.tickets) == 2, "both requests at the engine")
        sync = asyncio.ensure_future(link.client.call(messages.Sync))  # sent, never read: the engine goes first
        abort(link.engine_side)  # the engine's end goes away mid-flight
        async with asyncio.timeout(5):
            results = await asyncio.gather(held, queued, sync, return_exceptions=True)
        for result in results[:2]:
            assert isinstance(result, WorkerCrashed), result
            assert "model engine stopped while this request was in flight" in str(result)
        assert isinstance(results[2], WorkerCrashed)
        with pytest.raises(WorkerCrashed, match="not connected"):
            await link.client.submit("syn", 1, features(3.0), None, 0)
        with pytest.raises(ModelNotReady):
            link.client.catalog.get("syn")
        assert link.client.arena.used == 0


async def test_a_dead_front_end_loses_its_requests_and_their_queue_places(repository: Path) -> None:
    async with linked(repository, engine_restart_hold_s=0) as link:  # (its requests: failed, not held)
        link.hold()
        first = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(link.held, "a batch at the gate")
        second = asyncio.ensure_future(link.client.submit("syn", 1, features(2.0), 1e12, 0))
        batcher = link.queue("syn")
        await until(lambda: batcher.queued_rows == 1, "the second request queued")
        output_arena = link.frontend.outputs
        assert output_arena is not None
        abort(link.client_side)  # the front end goes away
        await until(lambda: not link.engine.links, "the engine forgets the front end")
        assert batcher.queued_rows == 0  # its queue place is free at once
        assert not (SHM_DIR / output_arena.name).exists()  # the arena the engine kept for it is removed
        async with asyncio.timeout(5):
            for request in (first, second):
                with pytest.raises(WorkerCrashed):
                    await request


async def test_a_peer_that_sends_nonsense_is_a_dead_peer(repository: Path) -> None:
    async with linked(repository, engine_restart_hold_s=0) as link:
        link.hold()
        request = asyncio.ensure_future(link.client.submit("syn", 1, features(1.0), 1e12, 0))
        await until(link.held, "a batch at the gate")
        link.engine_side.send(("nonsense",))
        async with asyncio.timeout(5):
            with pytest.raises(WorkerCrashed, match="in flight"):
                await request
        await until(lambda: not link.engine.links, "both ends closed")


def every_message() -> list[tuple[Any, ...]]:
    layout: Layout = [("features", "<f4", (2, 4), 4096)]
    return [
        messages.Hello(0, 1234, "arena-in"), messages.Submit(1, "syn", 1, layout, {}, None, 0, 2),
        messages.Cancel(1), messages.Free([4096, 8192]), messages.Sync(2), messages.Scrape(3),
        messages.Index(4, True), messages.Load(5, "syn", {"max_batch_size": 2}), messages.Unload(6, "syn"),
        messages.Welcome("arena-out"), messages.Catalog(False, [], {}, {}, False),
        messages.Result(1, 4096, layout, {"echo": np.array([b"x"], dtype=object)}),
        messages.Error(1, "QueueFull", "full", 0.5), messages.Reply(2, [{"name": "syn"}]),
    ]


def test_every_message_crosses_the_wire_as_a_plain_tuple_and_comes_back_as_itself() -> None:
    sent = every_message()
    kinds = {type(message) for message in sent}
    assert kinds == set(get_args(messages.ToEngine)) | set(get_args(messages.ToFrontEnd))
    assert len({message[-1] for message in sent}) == len(sent)  # the last field, kind, names each
    received: list[Any] = []
    receive = messages.dispatcher({kind: received.append for kind in kinds})
    for wire in pickle.loads(pickle.dumps([tuple(message) for message in sent])):
        assert type(wire) is tuple
        receive(wire)
    assert [type(message) for message in received] == [type(message) for message in sent]
    assert [repr(message) for message in received] == [repr(message) for message in sent]
    with pytest.raises(messages.UnknownMessage):
        receive(("nonsense",))
    with pytest.raises(messages.UnknownMessage):  # a kind this side does not handle
        messages.dispatcher({messages.Submit: received.append})(tuple(messages.Result(1, None, [], {})))


def test_an_error_is_one_shape_whoever_raised_it() -> None:
    error = messages.Error.of(7, QueueFull("the queue is full", retry_after=0.25))
    assert error == messages.Error(7, "QueueFull", "the queue is full", 0.25)
    assert messages.Error.of(8, ValueError("bad")) == messages.Error(8, "ValueError", "bad", None)


async def test_a_group_refused_whole_is_retried_member_by_member(repository: Path) -> None:
    async with linked(repository) as link:
        link.hold()
        first = asyncio.ensure_future(link.client.submit("tight", 1, features(1.0), 1e12, 0))
        await until(link.held, "the first batch at the gate")
        # two requests in one turn travel as one group of two rows, more than the queue's one place
        grouped = [asyncio.ensure_future(link.client.submit("tight", 1, features(v), None, 0)) for v in (2.0, 3.0)]
        await until(lambda: link.queue("tight").queued_rows == 1, "the first member queued alone")
        link.release()
        results = await asyncio.gather(first, *grouped, return_exceptions=True)
        assert float(results[0]["total"][0, 0]) == 1.0 and float(results[1]["total"][0, 0]) == 2.0
        assert isinstance(results[2], QueueFull), results[2]
