"""The Python work of one request on the in-protocol HTTP path, without sockets: CPU a request, steady to a µs.

    python -m load_tests.research.protocol_cpu [--connections 64] [--requests 20000] [--repeats 5]
        [--format v2_binary|v2_json|tfserving_json] [--profile out.pstats]

The server's own request path (uvicorn's protocol with batchserve's in-place inference, admission, the
service, the real Batcher and a thread instance of a synthetic model) runs in this process, built as
``batchserve serve`` builds it (tests/harness.py, so run it from a checkout). Connections are protocol objects
on in-memory transports: each round hands every connection one request (``data_received``) and waits for
every answer, so the batches hold ``--connections`` rows. CPU is this process's (``time.process_time``: the
event loop, the model's thread, the collector), per request, for each repeat.

What it leaves out is the kernel: the socket reads and writes, epoll and the wake-ups (about 20 µs a
request on the 2-core machine of docs/benchmarks.md, the same for the bare handler). What it gives is the
rest, steadily enough to weigh a cut of one or two µs, which the socket benchmarks cannot resolve on a
shared machine (their CPU a request moves 10-25 % from run to run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import generator
from ..harness.payloads import encode
from ..harness.synthetic import write_repository


class Answers:
    """Answers written, and a future that resolves once ``expected`` have been."""

    def __init__(self) -> None:
        self.count = 0
        self.expected = 0
        self.done: asyncio.Future[None] | None = None

    def wait_for(self, more: int) -> asyncio.Future[None]:
        self.expected = self.count + more
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def written(self) -> None:
        self.count += 1
        if self.count == self.expected and self.done is not None:
            self.done.set_result(None)


class MemoryTransport(asyncio.Transport):
    """A connection's transport in memory: what is written is counted as an answer."""

    def __init__(self, answers: Answers) -> None:
        super().__init__()
        self.answers = answers
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("sockname", "peername") else default

    def write(self, data: Any) -> None:
        if data[:9] == b"HTTP/1.1 ":  # an answer's head (the bare handler writes its body apart)
            self.answers.written()

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def measure(model: str, fmt: str, connections: int, requests: int, repeats: int, profile: str | None,
                  bare: bool = False) -> list[float]:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from server.http.protocol import protocol_for
    from tests.harness import serving

    root = write_repository(Path(tempfile.mkdtemp()) / "repo")  # the H200 timings, as the socket benchmarks
    payload = encode(model, fmt)
    wire = generator.build_request(f"http://127.0.0.1{payload.path}", payload.body, payload.content_type,
                                   payload.headers)
    results: list[float] = []
    async with contextlib.AsyncExitStack() as stack:
        if bare:  # the floor: uvicorn's own protocol and the bare handler, over the same transports; no server
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

            from ..harness.bare_handler import app
            protocol_class: Any = HttpToolsProtocol
        else:
            served = await stack.enter_async_context(serving(root, http_socket=False))
            protocol_class, app = protocol_for(served.app), served.asgi_app
        config = Config(app, log_config=None, lifespan="off", access_log=False)
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()
        answers = Answers()
        protocols = []
        for _ in range(connections):
            protocol = protocol_class(config=config, server_state=state, app_state={}, _loop=loop)
            protocol.connection_made(MemoryTransport(answers))
            protocols.append(protocol)

        async def round_() -> None:
            done = answers.wait_for(connections)
            for protocol in protocols:
                protocol.data_received(wire)
            await done

        for _ in range(max(1, 2000 // connections)):  # warm: plans, caches, the cost model
            await round_()
        rounds = max(1, requests // connections)
        profiler = cProfile.Profile() if profile else None
        for _ in range(repeats):
            if profiler is not None:
                profiler.enable()
            start = time.process_time()
            for _ in range(rounds):
                await round_()
            results.append((time.process_time() - start) / (rounds * connections) * 1e6)
            if profiler is not None:
                profiler.disable()
        if profiler is not None and profile:
            profiler.dump_stats(profile)
        for protocol in protocols:
            protocol.connection_lost(None)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", default="v2_binary", choices=["v2_binary", "v2_json", "tfserving_json"])
    parser.add_argument("--model", default="tabular", help="a synthetic model of load_tests/harness/synthetic.py")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20000, help="a repeat's requests")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", help="write a cProfile of the measured repeats here (slows them)")
    parser.add_argument("--bare", action="store_true", help="the floor instead: the bare handler of batchserve bench "
                        "(load_tests/harness/bare_handler.py) on uvicorn's own protocol")
    args = parser.parse_args()
    try:
        import uvloop
        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    values = runner(measure(args.model, args.format, args.connections, args.requests, args.repeats, args.profile,
                            args.bare))
    each = ", ".join(f"{v:.1f}" for v in values)
    print(f"{'bare handler' if args.bare else 'batchserve'} {args.model} {args.format} {args.connections} "
          "connections: CPU a request "
          f"{np.min(values):.1f}-{np.max(values):.1f} µs, median {np.median(values):.1f} ({each})")


if __name__ == "__main__":
    main()
