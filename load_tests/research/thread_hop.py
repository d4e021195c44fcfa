"""CPU of one hop from the event loop to a model thread and back: ``run_in_executor`` on a one-thread
``ThreadPoolExecutor`` against ``InstanceThread.call`` (server/runtime/instance_thread.py), the thread model's
cost per batch.

    python -m load_tests.research.thread_hop [--hops 20000] [--core 1]

Both run in the same process, alternating, twice each, with uvloop and the server's GIL switch interval;
prints CPU and wall µs per hop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor

import uvloop

from server.runtime.instance_thread import InstanceThread
from server.settings import Settings


def _work(value: int) -> int:
    return value


async def _executor(hops: int) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(1)
    for i in range(hops):
        await loop.run_in_executor(executor, _work, i)
    executor.shutdown()


async def _instance_thread(hops: int) -> None:
    loop = asyncio.get_running_loop()
    thread = InstanceThread("hop")
    for i in range(hops):
        await thread.call(loop, _work, i)
    thread.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hops", type=int, default=20000)
    parser.add_argument("--core", type=int, default=None, help="pin to this core (as a pinned server)")
    args = parser.parse_args()
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    sys.setswitchinterval(Settings().gil_switch_interval_ms / 1000.0)
    runs: list[tuple[str, Callable[[int], Coroutine[None, None, None]]]] = [("run_in_executor", _executor),
                                                                 ("InstanceThread.call", _instance_thread)] * 2
    for name, run in runs:
        cpu, wall = time.process_time(), time.perf_counter()
        uvloop.run(run(args.hops))
        print(f"{name:20s} {(time.process_time() - cpu) / args.hops * 1e6:6.1f} µs CPU "
              f"{(time.perf_counter() - wall) / args.hops * 1e6:6.1f} µs wall per hop")


if __name__ == "__main__":
    main()
