"""server/runtime/instance_thread.py: a model instance's thread, as an Executor and through its lean call."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.runtime.instance_thread import InstanceThread


async def test_call_runs_on_the_thread_in_order_and_carries_results_and_errors() -> None:
    loop = asyncio.get_running_loop()
    thread = InstanceThread("model-test")
    try:
        names = await asyncio.gather(*(thread.call(loop, lambda i=i: (i, threading.current_thread().name))
                                       for i in range(5)))
        assert names == [(i, "model-test") for i in range(5)]
        with pytest.raises(ZeroDivisionError):
            await thread.call(loop, lambda: 1 / 0)
        assert await loop.run_in_executor(thread, pow, 2, 10) == 1024  # the Executor face: load and warm-up
    finally:
        thread.shutdown()


async def test_a_cancelled_call_is_not_resolved_and_shutdown_cancels_what_waits() -> None:
    loop = asyncio.get_running_loop()
    thread = InstanceThread("model-test")
    gate, started = threading.Event(), threading.Event()

    def hold() -> bool:
        started.set()
        return gate.wait()

    running = thread.call(loop, hold)
    waiting = thread.call(loop, lambda: "never")
    started.wait()  # the thread holds ``running``: ``waiting`` is still queued
    running.cancel()  # the model still runs it; its late result is dropped
    thread.shutdown(wait=False, cancel_futures=True)
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert running.cancelled()
    with pytest.raises(RuntimeError, match="after shutdown"):
        thread.call(loop, lambda: None)
