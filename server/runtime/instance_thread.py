"""One model instance's thread: an Executor for loading and warm-up, and a lean call for the batches.

``loop.run_in_executor`` wraps a ``concurrent.futures.Future`` in an asyncio one and chains the two
across threads; a batch's hop that way cost ~55 µs of CPU on this machine, against ~40 µs for a call
that puts the work on the thread's queue and resolves an asyncio future with ``call_soon_threadsafe``
(load_tests/research/thread_hop.py). A thread model pays it once per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import SimpleQueue
from typing import Any, TypeVar

T = TypeVar("T")
_Item = tuple[asyncio.AbstractEventLoop | None, Any, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class InstanceThread(Executor):
    """A single daemon thread running what it is given, in order."""

    def __init__(self, name: str) -> None:
        self._queue: SimpleQueue[_Item | None] = SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise RuntimeError("cannot schedule new work after shutdown")
        future: Future[T] = Future()
        self._queue.put((None, future, fn, args, kwargs))
        return future

    def call(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on this thread; its result (or exception) in an asyncio future of ``loop``."""
        if self._closed:
            raise RuntimeError("cannot schedule new work after shutdown")
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((loop, future, fn, args, {}))
        return future

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future, fn, args, kwargs = item
            if loop is None:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn(*args, **kwargs))
                    except BaseException as error:
                        future.set_exception(error)
                continue
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args), None)
            except BaseException as raised:
                outcome = (None, raised)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for it
                loop.call_soon_threadsafe(settle, future, *outcome)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._closed = True
        if cancel_futures:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    continue
                loop, future = item[0], item[1]
                if loop is None:
                    future.cancel()
                else:
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(future.cancel)
        self._queue.put(None)
        if wait:
            self._thread.join()


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """``result``, or ``error`` when there is one, as ``future``'s outcome, unless it was cancelled first (while
    the model ran; a gRPC call whose client left)."""
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
