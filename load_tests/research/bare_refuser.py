"""The least a server pays to refuse a request, for ``refusal_floor``: a Python event-loop refuser
(``BareRefuser``; ``python -m load_tests.research.bare_refuser PORT`` serves it) and the C one
(``refusal_floor.c``, built by ``build_c``), each run as a ``BareServer`` (load_tests/harness/local_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path

REPLY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
         b'content-length: 27\r\n\r\n{"error": "overloaded now"}')  # as refusal_floor.c's


class BareRefuser(asyncio.Protocol):
    """The least a Python event-loop server does per request: frame it by Content-Length and
    answer a canned 503 (all the answers to one read in one write). No HTTP parser, no routing,
    no per-request object: the floor under any Python front end's refusal."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""  # the start of a request split over reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        start = answers = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            head = buffer[start:end].lower()
            field = head.find(b"\r\ncontent-length:")
            length = 0
            if field >= 0:
                stop = head.find(b"\r\n", field + 2)
                try:
                    length = int(head[field + 17 : stop if stop > 0 else None])
                except ValueError:
                    length = -1
            if length < 0:
                assert self.transport is not None
                self.transport.close()
                return
            if end + 4 + length > len(buffer):
                break
            start = end + 4 + length
            answers += 1
        self.buffer = buffer[start:]
        if answers:
            assert self.transport is not None
            self.transport.write(REPLY * answers)
    # eof_received returns None: the transport closes on EOF


def serve_bare(port: int) -> None:
    """Serve BareRefuser on 127.0.0.1:``port`` until killed (uvloop when importable, as batchserve)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(BareRefuser, "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def build_c(workdir: Path) -> tuple[Path | None, str]:
    """refusal_floor.c built with ``cc -O2`` into ``workdir``, or None and why not."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler (cc, gcc, clang) on PATH"
    binary = workdir / "refusal_floor"
    source = Path(__file__).with_name("refusal_floor.c")
    built = subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(source)], capture_output=True, text=True)
    if built.returncode != 0:
        return None, f"{compiler} failed:\n{built.stderr}"
    return binary, ""


if __name__ == "__main__":
    serve_bare(int(sys.argv[1]))
