"""The floor for ``grpc_bench``: a bare gRPC server answering ModelInfer with a few canned bytes, in a process
of its own (``FloorServer``), as grpc.aio (optionally waiting one event-loop turn per call), as the sync server,
or as the sync server handing each call to an event loop's thread.

    python -m load_tests.research.grpc_floor --kind aio --port 50051 [--loop asyncio] [--suspend]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

from ..harness.local_server import ROOT, free_port, taskset


def _floor(kind: str, port: int, loop: str = "uvloop", suspend: bool = False) -> None:
    import grpc

    answer = b"\n\x07floor\x00"  # a few bytes, as a tiny response message would be

    def handlers() -> grpc.GenericRpcHandler:
        if kind == "aio" and suspend:
            async def handle(request: bytes, context: Any) -> bytes:  # waits once, as a batched call does
                waiter = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_soon(waiter.set_result, None)
                await waiter
                return answer
        elif kind == "aio":
            async def handle(request: bytes, context: Any) -> bytes:
                return answer
        else:
            def handle(request: bytes, context: Any) -> bytes:  # type: ignore[misc]
                return answer
        return grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(handle)})

    options = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 64 * 2**20)]
    if kind in ("sync", "sync_bridge"):
        from concurrent.futures import ThreadPoolExecutor

        server = grpc.server(ThreadPoolExecutor(max_workers=64), options=options)
        server.add_generic_rpc_handlers([handlers() if kind == "sync" else _bridge(answer)])
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    import uvloop

    async def serve() -> None:
        aio = grpc.aio.server(options=options)
        aio.add_generic_rpc_handlers([handlers()])
        aio.add_insecure_port(f"127.0.0.1:{port}")
        await aio.start()
        await aio.wait_for_termination()

    (uvloop.run if loop == "uvloop" else asyncio.run)(serve())


def _bridge(answer: bytes) -> Any:
    """The sync server's way into an event loop: a handler thread hands the call to the loop's thread (as a
    sync gRPC server feeding the batchers would), waits one loop turn there, and blocks on the result."""
    import threading

    import grpc
    import uvloop

    loop = uvloop.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def work() -> bytes:
        waiter = loop.create_future()
        loop.call_soon(waiter.set_result, None)
        await waiter
        return answer

    def handle(request: bytes, context: Any) -> bytes:
        return asyncio.run_coroutine_threadsafe(work(), loop).result()

    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(handle)})


class FloorServer:
    def __init__(self, kind: str, core: str | None, *extra: str) -> None:
        self.port = free_port()
        self.grpc_target = f"127.0.0.1:{self.port}"
        self.process = subprocess.Popen([*taskset(core), sys.executable, "-m", "load_tests.research.grpc_floor",
                                         "--kind", kind, "--port", str(self.port), *extra], cwd=ROOT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"floor server ({kind}) did not listen")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["aio", "sync", "sync_bridge"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--suspend", action="store_true", help="the handler waits one event-loop turn")
    args = parser.parse_args()
    _floor(args.kind, args.port, args.loop, args.suspend)


if __name__ == "__main__":
    main()
