"""The server in the test's own process and event loop: no subprocess, no TensorFlow.

``serving(root, ...)`` builds the application the way ``batchserve serve`` does (``create_asgi_app``),
runs its lifespan over ASGI, and serves it three ways at once:

- ``socket``: uvicorn started in-process on 127.0.0.1 with the in-protocol HTTP fast path
  (``protocol_for``), driven with raw bytes (``served.connect()``: keep-alive, pipelining,
  disconnects) or through ``served.client("socket")``;
- ``asgi``: httpx's ASGITransport over the same application (``served.client("asgi")``);
- ``fastapi``: httpx over the FastAPI application behind the fast path (``served.client("fastapi")``):
  every route but inference, which FastAPI does not declare;

and, with ``grpc=True``, gRPC on a local port (``served.grpc_target``). With ``frontends=True`` it
is one front end around an engine, both in this process: the front end's requests cross the
shared-memory arena and the message channel to the engine's batchers, as with ``--frontends N``.

Models are ``backend: synthetic`` (``synthetic_model``). A version's batcher can be replaced by a
``PuppetBatcher`` (``served.puppet``: the test settles each request) or by a real ``Batcher`` whose
batches wait for the test (``served.hold``: real queueing, limits, deadlines and cancellation).
Everything a test observes is public: bytes on the socket, HTTP answers, gRPC statuses, /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import uvicorn
import yaml
from prometheus_client.parser import text_string_to_metric_families

from batching import Batcher
from server.app import create_asgi_app
from server.http.protocol import protocol_for
from server.observability.metrics import BatchMetrics
from server.settings import Settings

from .puppet import WAIT, HeldBatches, PuppetBatcher

# ---- models -----------------------------------------------------------------------------

SYN = {"inputs": {"features": {"datatype": "FP32", "shape": [-1, 4]}},
       "outputs": {"total": {"datatype": "FP32", "shape": [-1, 1]}}}
"""``syn``: each answer row is the request row's first value."""

MIXED = {"inputs": {"a": {"datatype": "FP32", "shape": [-1, 3]}, "b": {"datatype": "INT32", "shape": [-1]}},
         "outputs": {"total": {"datatype": "FP32", "shape": [-1]}, "label": {"datatype": "BYTES", "shape": [-1]}}}
"""Two inputs, a number and a string out: ``total`` = a[:, 0] + b, ``label`` = repr(float(total)) as bytes."""

ECHO = {"inputs": {"text": {"datatype": "BYTES", "shape": [-1]}},
        "outputs": {"label_bytes": {"datatype": "BYTES", "shape": [-1]}}}
"""Strings only: every answer row is b"0.0" (the synthetic rule over no numeric input)."""


def synthetic_model(root: Path, name: str, signature: Mapping[str, Any] = SYN, versions: Sequence[int] = (1,),
                    **config: Any) -> Path:
    """Write a ``backend: synthetic`` model (no compute, no delay unless ``synthetic`` says) under ``root``."""
    for version in versions:
        (root / name / str(version)).mkdir(parents=True, exist_ok=True)
    document = {"backend": "synthetic", "max_batch_size": 4, "signature": dict(signature),
                "synthetic": {"base_ms": 0.0}, **config}
    (root / name / "model.yaml").write_text(yaml.safe_dump(document))
    return root


def broken_model(root: Path, name: str = "broken") -> Path:
    """A model whose model.yaml cannot load (an unknown key): it exists and is never ready (503)."""
    (root / name / "1").mkdir(parents=True, exist_ok=True)
    (root / name / "model.yaml").write_text(yaml.safe_dump({"backend": "synthetic", "signature": dict(SYN),
                                                              "no_such_key": 1}))
    return root


def syn_rule(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What ``syn`` answers for ``inputs``: each row's first value."""
    return {"total": np.asarray(inputs["features"], np.float32)[:, :1].copy()}


# ---- HTTP answers and raw connections -----------------------------------------------------

@dataclass
class Response:
    """An HTTP answer, whichever way it came: status, headers (lower-case names), body."""

    status: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return orjson.loads(self.content)


def request_bytes(method: str, path: str, body: bytes | Mapping[str, Any] | None = None,
                  headers: Mapping[str, str] | None = None, *, keep_alive: bool = True,
                  chunked: bool = False) -> bytes:
    """One HTTP/1.1 request as bytes (a dict body is sent as JSON)."""
    if body is not None and not isinstance(body, bytes | bytearray):
        body = orjson.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    lines = [f"{method} {path} HTTP/1.1", "Host: batchserve.test"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if not keep_alive:
        lines.append("Connection: close")
    payload = bytes(body or b"")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        half = len(payload) // 2
        pieces = [p for p in (payload[:half], payload[half:]) if p]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif body is not None or method == "POST":
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class Connection:
    """A raw client connection: the test decides exactly which bytes go out and when."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = WAIT) -> Response:
        """The next whole answer on this connection."""
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            if "content-length" in headers:
                content = await self.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                parts = []
                while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                    parts.append(await self.reader.readexactly(size))
                    await self.reader.readexactly(2)
                await self.reader.readuntil(b"\r\n")
                content = b"".join(parts)
            else:
                content = b""
        return Response(int(lines[0].split()[1]), headers, content)

    async def request(self, method: str, path: str, body: bytes | Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None, **options: Any) -> Response:
        await self.send(request_bytes(method, path, body, headers, **options))
        return await self.response()

    async def closed_by_server(self, timeout: float = WAIT) -> bool:
        """True once the server has closed its side (nothing more to read)."""
        async with asyncio.timeout(timeout):
            return await self.reader.read(1) == b""

    def close(self) -> None:
        """Leave, as a client that disconnects does."""
        if not self.writer.is_closing():
            self.writer.close()


class Client:
    """Requests over one of the three HTTP routes into the server: "socket", "asgi" or "fastapi"."""

    def __init__(self, served: Served, via: str) -> None:
        self.served, self.via = served, via
        self._connection: Connection | None = None
        self._http: httpx.AsyncClient | None = None
        if via in ("asgi", "fastapi"):
            app = served.asgi_app if via == "asgi" else served.app
            self._http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://batchserve.test",
                                           timeout=WAIT)
        elif via != "socket":
            raise ValueError(f"no route {via!r}: socket, asgi or fastapi")

    async def request(self, method: str, path: str, body: bytes | Mapping[str, Any] | None = None,
                      headers: Mapping[str, str] | None = None) -> Response:
        if self._http is not None:
            kwargs: dict[str, Any] = {"headers": dict(headers or {})}
            if isinstance(body, bytes | bytearray):
                kwargs["content"] = bytes(body)
            elif body is not None:
                kwargs["content"] = orjson.dumps(body)
                kwargs["headers"].setdefault("Content-Type", "application/json")
            answer = await self._http.request(method, path, **kwargs)
            return Response(answer.status_code, {k.lower(): v for k, v in answer.headers.items()}, answer.content)
        if self._connection is None or self._connection.reader.at_eof():
            self._connection = await self.served.connect()
        return await self._connection.request(method, path, body, headers)

    async def post(self, path: str, body: bytes | Mapping[str, Any] | None = None,
                   headers: Mapping[str, str] | None = None) -> Response:
        return await self.request("POST", path, body if body is not None else b"", headers)

    async def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return await self.request("GET", path, None, headers)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._connection is not None:
            self._connection.close()


# ---- the served application ------------------------------------------------------------------

class _Lifespan:
    """The ASGI lifespan protocol, driven as a server does (uvicorn's ``lifespan="on"``)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def _next(self) -> dict[str, Any]:
        assert self.task is not None
        getter = asyncio.ensure_future(self.outbox.get())
        await asyncio.wait([getter, self.task], return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        self.task.result()  # the application raised: raise it here
        raise RuntimeError("the application's lifespan ended without answering")

    async def startup(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        message = await self._next()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"the application failed to start: {message.get('message', message)}")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self.inbox.put({"type": "lifespan.shutdown"})
        message = await self._next()
        await self.task
        if message["type"] != "lifespan.shutdown.complete":
            raise RuntimeError(f"the application failed to stop: {message.get('message', message)}")


async def until(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Wait until ``condition()`` (or the coroutine it returns) is truthy: state the server shows, read again
    every few ms. Returns that value."""

    async def check() -> Any:
        result = condition()
        return await result if inspect.isawaitable(result) else result

    try:
        async with asyncio.timeout(timeout):
            while True:  # the server's state has no event to wait on from outside: read it again shortly
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_names = itertools.count()


@dataclass
class Served:
    """One running server (see the module's docstring)."""

    settings: Settings
    asgi_app: Any  # create_asgi_app's application: the fast path in front of FastAPI
    app: Any  # the FastAPI application behind it
    port: int | None = None
    grpc_target: str | None = None
    engine: Any = None  # frontends=True: the in-process Engine
    _clients: list[Client] = field(default_factory=list)
    _connections: list[Connection] = field(default_factory=list)
    _installed: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.port is not None, "served without a socket"
        return f"http://127.0.0.1:{self.port}"

    def client(self, via: str) -> Client:
        client = Client(self, via)
        self._clients.append(client)
        return client

    async def connect(self) -> Connection:
        """A new raw connection to the in-protocol HTTP server."""
        assert self.port is not None, "served without a socket"
        connection = Connection(*await asyncio.open_connection("127.0.0.1", self.port))
        self._connections.append(connection)
        return connection

    # ---- what /metrics says ----

    async def metrics_text(self) -> str:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.asgi_app),
                                     base_url="http://batchserve.test") as http:
            answer = await http.get("/metrics")
        assert answer.status_code == 200, answer.text
        return answer.text

    async def samples(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        """Every sample named ``name`` whose labels include ``labels``."""
        found = []
        for family in text_string_to_metric_families(await self.metrics_text()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    found.append((dict(sample.labels), sample.value))
        return found

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there are none)."""
        return sum(value for _, value in await self.samples(name, **labels))

    async def requests_by_code(self, **labels: str) -> dict[str, float]:
        """``batchserve_requests_total`` by ``code`` (non-zero only), over the samples matching ``labels``."""
        counts: dict[str, float] = {}
        for sample_labels, value in await self.samples("batchserve_requests_total", **labels):
            if value:
                counts[sample_labels["code"]] = counts.get(sample_labels["code"], 0.0) + value
        return counts

    # ---- batchers the test controls ----

    def _version(self, model: str, version: int | None) -> Any:
        """The served version's catalog entry, in the process that runs its batcher."""
        repository = self.engine.repository if self.engine is not None else self.app.state.service.repository
        return repository.get(model, version)

    async def puppet(self, model: str, version: int | None = None) -> PuppetBatcher:
        """Put a PuppetBatcher in place of the version's batcher (one process only: the engine relays to a
        real Batcher)."""
        assert self.engine is None, "puppets stand in for one process's batcher; use hold() with front ends"
        mv = self._version(model, version)
        previous, mv.batcher = mv.batcher, PuppetBatcher(f"{mv.name}:{mv.version}")
        mv.batchers[mv.signature.name] = mv.batcher
        await previous.close(drain=True)
        self._installed.append(mv.batcher)
        return mv.batcher  # type: ignore[no-any-return]

    async def hold(self, model: str, rule: Callable[[Mapping[str, np.ndarray]], Mapping[str, Any]] = syn_rule,
                   version: int | None = None) -> tuple[HeldBatches, Batcher]:
        """Put a real Batcher (the version's config, its metrics) in place of the version's, whose batches
        wait until the test releases them; returns both."""
        mv = self._version(model, version)
        metrics = self.engine.metrics if self.engine is not None else self.app.state.metrics
        held = HeldBatches(rule, f"{mv.name}:{mv.version}")
        batcher = Batcher(held.run, mv.batch_config, name=f"{mv.name}:{mv.version}",
                          observer=BatchMetrics(metrics, mv.name, str(mv.version), mv.backend, mv.device))
        previous, mv.batcher = mv.batcher, batcher
        mv.batchers[mv.signature.name] = batcher
        await previous.close(drain=True)
        self._installed.append(held)
        return held, batcher

    async def _release_controlled(self) -> None:
        """Nothing the test left pending may hold up shutdown: pending requests fail as at close."""
        for item in self._installed:
            await item.close()


@contextlib.asynccontextmanager
async def _http_socket(served: Served, keep_alive_s: float) -> AsyncIterator[None]:
    """uvicorn on 127.0.0.1 in this event loop, with the inference protocol, as ``run_http`` sets it up."""
    settings = served.settings
    config = uvicorn.Config(
        served.asgi_app, host=settings.host, port=0, http=protocol_for(served.app), lifespan="off",
        log_config=None, log_level=settings.log_level, access_log=settings.access_log,
        proxy_headers=settings.proxy_headers, timeout_keep_alive=keep_alive_s)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config.load()
    server.lifespan = config.lifespan_class(config)  # "off": the lifespan is the harness's (as Server.serve sets it)
    await server.startup(sockets=[sock])
    await server.on_tick(0)  # the default headers (date, server), as its main loop sets them
    served.port = sock.getsockname()[1]
    try:
        yield
    finally:
        for listening in server.servers:
            listening.close()
        state = server.server_state
        for connection in list(state.connections):
            connection.shutdown()  # closes idle ones; one answering closes once it has answered
        try:
            await until(lambda: not state.connections and not state.tasks, "the HTTP connections to close", 5.0)
        except AssertionError:
            for connection in list(state.connections):
                connection.transport.abort()
            for task in list(state.tasks):
                task.cancel()
            raise
        finally:
            for listening in server.servers:
                await listening.wait_closed()
            sock.close()


@contextlib.asynccontextmanager
async def _engine(settings: Settings) -> AsyncIterator[tuple[Any, Any]]:
    """The engine (every model's batcher) serving in this process, and a front end's client of it."""
    from server.ipc.arena import remove_leftovers
    from server.multiprocess.engine import Engine
    from server.multiprocess.remote import EngineClient

    folder = tempfile.mkdtemp(prefix="bs-", dir="/tmp")  # a Unix socket's path must stay short
    prefix = f"bstest-{os.getpid()}-{next(_names)}-"
    engine = Engine(settings, f"{folder}/engine.sock", prefix)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(engine.serve())
    try:
        yield engine, EngineClient(settings, f"{folder}/engine.sock", prefix, 0)
    finally:
        # Engine.serve stops on SIGTERM (its loop's handler), as when its supervisor stops it.
        if not task.done() and signal.getsignal(signal.SIGTERM) is not handlers[signal.SIGTERM]:
            signal.raise_signal(signal.SIGTERM)
        elif not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for sig, handler in handlers.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)
        remove_leftovers(prefix)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(root: Path, *, http_socket: bool = True, grpc: bool = False, frontends: bool = False,
                  keep_alive_s: float = 5.0, **settings: Any) -> AsyncIterator[Served]:
    """Serve the models under ``root`` in this process until the block ends (see the module's docstring).

    ``keep_alive_s``: uvicorn's idle keep-alive timeout. ``settings``: any ``Settings`` field; the defaults here
    keep a test quiet and quick (no polling, no warm-up, no gc.freeze, small arenas) and its batches as it sends
    them (an idle model takes what is queued at once, however busy the test's loop: idle_dispatch_busy_share 0)."""
    values: dict[str, Any] = {"model_repository": root, "host": "127.0.0.1", "port": 0, "poll_interval": 0,
                              "warmup": False, "gc_freeze": False, "log_level": "warning", "drain_timeout_s": 5,
                              "frontend_arena_mb": 8, "grpc_port": _free_port() if grpc else 0,
                              "idle_dispatch_busy_share": 0, **settings}
    config = Settings(**values)
    switch_interval = sys.getswitchinterval()  # the lifespan sets it for the server's process
    async with contextlib.AsyncExitStack() as stack:
        engine = client = None
        if frontends:
            engine, client = await stack.enter_async_context(_engine(config))
        asgi_app = create_asgi_app(config, client)
        served = Served(config, asgi_app, getattr(asgi_app, "app", asgi_app), engine=engine,
                        grpc_target=f"127.0.0.1:{config.grpc_port}" if grpc else None)
        lifespan = _Lifespan(asgi_app)
        await lifespan.startup()
        stack.push_async_callback(lifespan.shutdown)
        stack.callback(sys.setswitchinterval, switch_interval)
        if http_socket:
            await stack.enter_async_context(_http_socket(served, keep_alive_s))
        stack.push_async_callback(served._release_controlled)  # first of all: nothing left waiting on the test
        try:
            yield served
        finally:
            for connection in served._connections:
                connection.close()
            for made in served._clients:
                await made.aclose()
