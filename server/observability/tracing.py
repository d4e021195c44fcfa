"""OpenTelemetry tracing: whether it is on, its set-up from the standard ``OTEL_*`` variables, and sampling.

Tracing needs the optional extra (``pip install 'batchserve[otel]'``: the SDK and its OTLP/HTTP exporter) and is
off by default. ``--tracing auto`` (the default) turns it on when the environment names an exporter
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER``); ``on``
turns it on whatever the environment says (the SDK's default endpoint, http://localhost:4318); ``off`` never.
``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off. Everything else is the SDK's, read from
its variables: the endpoint, headers and timeout (``OTEL_EXPORTER_OTLP_*``), the service name
(``OTEL_SERVICE_NAME``, default ``batchserve``) and resource, the batch processor (``OTEL_BSP_*``).
``OTEL_EXPORTER_OTLP_PROTOCOL`` picks the exporter (``http/protobuf``, the default, or ``grpc`` with
opentelemetry-exporter-otlp-proto-grpc installed); ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG`` the
sampler (the SDK's six: ``parentbased_traceidratio`` and the others).

Cost: the request path reads one module attribute, ``TRACER``, None while tracing is off. While it is on, each
request is decided here as the SDK's sampler would decide it (the same rule on the same trace id): a root request
costs a random trace id and a comparison, a request with a ``traceparent`` the header's parse. Only a sampled
request costs more: spans.py builds its spans as the SDK's ``ReadableSpan`` once each has ended, and hands them to
the SDK's batch span processor, which exports them from its own thread (no tracer, context or sampler calls on
the request path).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from server import __version__
from server.observability.trace_context import ids, sampled, valid_traceparent

if TYPE_CHECKING:
    from server.settings import Settings

# server/core/request.py's InferRequest, not imported: the runtime imports this module (its hooks), and the
# request imports the runtime's names
InferRequest = Any

log = logging.getLogger(__name__)

_LIMIT = (1 << 64) - 1  # TraceIdRatioBased compares a trace id's low 64 bits with its bound
SAMPLERS = ("always_on", "always_off", "traceidratio",
            "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio")


class TracingUnavailable(RuntimeError):
    """Tracing was asked for and cannot run: an OTEL_* value is not one it takes, or the SDK is missing."""


class SdkMissing(TracingUnavailable):
    """The otel extra is not installed."""


def wanted(mode: str, env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether tracing is on for ``--tracing mode`` and these environment variables (the module's rule)."""
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if mode == "off" or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or exporter == "none":
        return False
    return mode == "on" or bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


class Sampling:
    """OTEL_TRACES_SAMPLER's decision, made before any span exists (the SDK's rules, the same trace ids)."""

    def __init__(self, name: str, argument: str | None) -> None:
        if name not in SAMPLERS:
            raise TracingUnavailable(f"OTEL_TRACES_SAMPLER={name!r} is not a sampler batchserve takes; one of "
                                     f"{', '.join(SAMPLERS)}")
        self.name, self.parent_based = name, name.startswith("parentbased_")
        root = name.removeprefix("parentbased_")
        self.ratio = 1.0 if root == "always_on" else 0.0 if root == "always_off" else _ratio(argument)
        self.bound = round(self.ratio * (_LIMIT + 1))

    def root(self) -> int:
        """A new trace's id when it is sampled, else 0."""
        trace_id = random.getrandbits(128)
        return trace_id if trace_id & _LIMIT < self.bound and trace_id else 0

    def child(self, trace_id: int, sampled: bool) -> bool:
        """Whether a request continuing the caller's trace (its ``sampled`` flag) is sampled."""
        return sampled if self.parent_based else trace_id & _LIMIT < self.bound


def _ratio(argument: str | None) -> float:
    if argument is None or not argument.strip():
        return 1.0
    try:
        ratio = float(argument)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        raise TracingUnavailable(f"OTEL_TRACES_SAMPLER_ARG={argument!r}: a sampling ratio from 0 to 1 (0.01: 1 %)")
    return ratio


class Tracing:
    """This process's span pipeline (one per process, shared by the apps in it): the resource, the SDK's batch
    span processor and exporters, and the sampling decision. spans.py hands it finished spans."""

    def __init__(self, role: str) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as error:
            raise SdkMissing(f"tracing needs the OpenTelemetry SDK: pip install 'batchserve[otel]' "
                             f"({error})") from None
        env = os.environ
        self.sampling = Sampling(env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower(),
                                 env.get("OTEL_TRACES_SAMPLER_ARG"))
        exporters = [_exporter(name.strip().lower())
                     for name in (env.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if name.strip()]
        resource = Resource.create({"batchserve.role": role, "process.pid": os.getpid()})
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": "batchserve"}))
        self.resource = resource
        self.scope = InstrumentationScope("batchserve", __version__)
        self.processors = [BatchSpanProcessor(exporter) for exporter in exporters]
        self.role = role
        atexit.register(self.shutdown)  # a worker process's last spans, when it exits

    def export(self, span: Any) -> None:
        """A finished span (the SDK's ReadableSpan) to the exporters, in the background."""
        for processor in self.processors:
            processor.on_end(span)

    def force_flush(self) -> None:
        for processor in self.processors:
            processor.force_flush()

    def shutdown(self) -> None:
        """Send what is left, and stop."""
        atexit.unregister(self.shutdown)
        for processor in self.processors:
            processor.shutdown()

    def http(self, request: InferRequest, headers: list[tuple[bytes, bytes]]) -> None:
        """Trace ``request`` if sampled, continuing the caller's ``traceparent`` HTTP header (lower-case names)."""
        for name, value in headers:
            if name == b"traceparent":
                if self._continue(request, value, lambda: next((v.decode("latin-1") for k, v in headers
                                                                if k == b"tracestate"), None)):
                    return
                break
        self.begin(request)

    def grpc(self, request: InferRequest, metadata: Any) -> None:
        """Trace ``request`` if sampled, continuing the caller's ``traceparent`` gRPC metadata."""
        for key, value in metadata or ():
            if key == "traceparent":
                if self._continue(request, value, lambda: next((v for k, v in metadata if k == "tracestate"), None)):
                    return
                break
        self.begin(request)

    def _continue(self, request: InferRequest, value: str | bytes, state: Callable[[], str | None]) -> bool:
        """Decide ``request`` by its caller's ``traceparent`` (started when sampled): false when that is not a
        valid one, and the request is then decided as a new trace."""
        raw = valid_traceparent(value)
        if raw is None:
            return False
        if self.sampling.parent_based:  # the caller's decision: no ids read for an unsampled one
            if sampled(raw):
                trace_id, span_id = ids(raw)
                self._start(request, trace_id, (trace_id, span_id, True), state())
        else:
            trace_id, span_id = ids(raw)
            if self.sampling.child(trace_id, sampled(raw)):
                self._start(request, trace_id, (trace_id, span_id, sampled(raw)), state())
        return True

    def begin(self, request: InferRequest) -> None:
        """Start ``request``'s trace (``request.trace``) when the sampler samples a new one; else it stays untraced."""
        trace_id = self.sampling.root()
        if trace_id:
            self._start(request, trace_id, None, None)

    def _start(self, request: InferRequest, trace_id: int, caller: tuple[int, int, bool] | None,
               state: str | None) -> None:
        from server.observability.spans import start_request  # the SDK's: imported once a request is sampled

        start_request(self, request, trace_id, caller, state)


def computed(parent: str, seconds: float, inputs: Mapping[str, Any], worker: bool = False) -> None:
    """A traced batch's model run (``parent``: the batch span), just ended after ``seconds``: its ``compute`` span,
    recorded in the process it ran in (a ``worker`` process starts its tracing with the first)."""
    global TRACER
    active = TRACER
    if active is None:
        if not worker:
            return
        active = TRACER = Tracing("worker")  # configured by the environment its parent passed on
    from server.observability.spans import compute_span  # the SDK's: imported once a traced batch has run

    compute_span(active, parent, seconds, len(next(iter(inputs.values()), ())))


TRACER: Tracing | None = None  # this process's tracing while it is on; the request path's one check
_users = 0
_lock = threading.Lock()


@contextmanager
def tracing(settings: Settings, role: str) -> Iterator[Tracing | None]:
    """Tracing on for this block when the settings and the environment ask for it (``wanted``); its spans are
    flushed when the last block of the process ends. A missing SDK is an error under ``--tracing on``, a
    warning under ``auto``."""
    global TRACER, _users
    if not wanted(settings.tracing):
        yield None
        return
    with _lock:
        if TRACER is None:
            try:
                TRACER = Tracing(role)
            except SdkMissing as error:
                if settings.tracing == "on":
                    raise
                log.warning("%s; serving without tracing", error)
            else:
                log.info("tracing on: OpenTelemetry spans of sampled requests (%s, ratio %g)", TRACER.sampling.name,
                         TRACER.sampling.ratio)
        active = TRACER
        _users += active is not None
    if active is None:
        yield None
        return
    try:
        yield active
    finally:
        with _lock:
            _users -= 1
            done, TRACER = (TRACER, None) if _users == 0 else (None, TRACER)
        if done is not None:
            done.shutdown()


@asynccontextmanager
async def traced(settings: Settings, role: str) -> AsyncIterator[Tracing | None]:
    """``tracing`` for an ``async with`` (a server's lifespan)."""
    with tracing(settings, role) as active:
        yield active


def _exporter(name: str) -> Any:
    """A span exporter named by OTEL_TRACES_EXPORTER; OTLP over OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise TracingUnavailable(f"OTEL_TRACES_EXPORTER={name!r}: batchserve exports otlp or console")
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    if protocol == "http/protobuf":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise SdkMissing(f"tracing needs the OTLP exporter: pip install 'batchserve[otel]' ({error})") from None
        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise TracingUnavailable("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                                     "installed (the otel extra exports http/protobuf)") from None
        return GrpcExporter()
    raise TracingUnavailable(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: batchserve exports http/protobuf or grpc")
