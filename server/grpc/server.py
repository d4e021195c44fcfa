"""The gRPC port: both APIs, health and reflection on one ``grpc.aio`` server, on the HTTP server's event loop.

``grpc_serving(state, shared_port)`` is entered by the app's lifespan once the service exists (models
loaded, or the engine's catalog announced) and left before the batchers drain: leaving it marks health
NOT_SERVING, refuses new calls and gives the calls in flight ``drain_timeout_s`` to finish.

Every method is a generic handler that parses its message once (the pool's class ``FromString``; a
ModelInferRequest whose header is known is not parsed at all (``plans.py``), and a large one has its raw
contents split off first, as views of the received bytes) and calls the
service's coroutine directly: no generated servicer classes, no interceptor unless bearer tokens are
configured, and no registered methods (health and reflection are generic handlers too: grpc.aio's accept
loop waits on one future per registered method for every call). With several front ends each binds the
port with SO_REUSEPORT (the kernel spreads connections, as for HTTP); one process binds it alone, so a busy
port fails loudly.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from server.admission.auth import HEALTH
from server.grpc import protos
from server.grpc.calls import Calls, Malformed
from server.grpc.kserve import KServeService
from server.grpc.plans import GENERAL, Plans
from server.grpc.status import grpc_error
from server.grpc.tensors import SPLIT_FROM_BYTES, SplitRequest, split_raw_contents
from server.grpc.tfserving import ModelService, PredictionService

log = logging.getLogger(__name__)

SERVED_NAMES = (f"KServe V2 ({protos.KSERVE_SERVICE})",
                f"TF Serving ({protos.PREDICTION_SERVICE}, {protos.MODEL_SERVICE})",
                f"health ({health.SERVICE_NAME})", f"reflection ({reflection.SERVICE_NAME})")
"""What the start-up line names: exactly what build_server registers."""


def _parser(message: Any) -> Callable[[bytes], Any]:
    parse = message.FromString
    name = message.DESCRIPTOR.full_name
    split = name == "inference.ModelInferRequest"
    plans = Plans() if split else None

    def deserialize(data: bytes) -> Any:
        try:
            if plans is not None and type(data) is bytes:  # a known header: no parse (server/grpc/plans.py)
                planned = plans.find(data)
                if planned is None and plans.wants(len(data)):
                    planned = plans.make(data, parse)
                if planned is not None and planned is not GENERAL:
                    return planned
            if split and len(data) >= SPLIT_FROM_BYTES:
                found = split_raw_contents(data)
                if found is not None:  # parse the rest; the raw contents stay views of ``data``
                    return SplitRequest(parse(data[:found[0]]), found[1])
            return parse(data)
        except DecodeError as error:
            return Malformed(f"the request is not a valid {name}: {error}")

    return deserialize


def _bytes_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serializer(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serializer


def _checked(function: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
             ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if type(request) is Malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        return await function(request, context)

    return handler


# (client streams, server streams) -> the method handler's maker
_MAKERS = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
           (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}


def _handlers(service_name: str, servicer: Any, unsupported: Callable[[str], Any] | None = None
              ) -> grpc.GenericRpcHandler:
    """One generic handler for every method of ``service_name``: those ``servicer`` has, else ``unsupported``'s."""
    descriptor = protos.pool().FindServiceByName(service_name)
    methods: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        function = getattr(servicer, method.name, None)
        if function is None:
            if unsupported is None:
                continue
            function = unsupported(method.name)
        request = protos.message(method.input_type.full_name)
        response = protos.message(method.output_type.full_name)
        make = _MAKERS[method.client_streaming, method.server_streaming]
        if make is grpc.unary_unary_rpc_method_handler and not getattr(function, "checks_malformed", False):
            function = _checked(function)
        serialize = response.SerializeToString
        if getattr(function, "answers_bytes", False):  # ModelInfer's hot path answers serialized bytes
            serialize = _bytes_or(serialize)
        methods[method.name] = make(function, request_deserializer=_parser(request), response_serializer=serialize)
    return grpc.method_handlers_generic_handler(service_name, methods)


class Health(health.aio.HealthServicer):  # type: ignore[misc]
    """``grpc.health.v1.Health``: "" (or a service name) is the server's readiness; a model's name
    (optionally ``name:version``) is that model's. An unknown model is NOT_FOUND, as the protocol asks."""

    def __init__(self, calls: Calls, service_names: Iterable[str]) -> None:
        super().__init__()
        self.calls = calls
        self.service_names = set(service_names)

    async def Check(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.calls.authorize(context, HEALTH)
        service = self.calls.service
        response = health_pb2.HealthCheckResponse
        if service.draining:
            return response(status=response.NOT_SERVING)
        if request.service in self.service_names or not request.service:
            return response(status=response.SERVING if service.repository.ready else response.NOT_SERVING)
        name, _, version = request.service.partition(":")
        if name not in service.repository.names():
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service or model {request.service!r}")
        try:
            service.repository.get(name, version or None)
        except Exception:
            return response(status=response.NOT_SERVING)
        return response(status=response.SERVING)


class _AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Health and reflection name no model, so their token check is here (only with a tokens file)."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        scope = HEALTH if method.startswith("/grpc.health.") else (
            "metadata" if method.startswith("/grpc.reflection.") else None)
        if scope is not None and not method.endswith("/Check"):  # Check asks itself
            error = self.calls.refused(details.invocation_metadata, scope, None)
            if error is not None:
                status = grpc_error(error)

                async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
                    await context.abort(status.code, status.details)

                # reflection's one call streams both ways; health's Watch streams answers
                return _MAKERS[scope == "metadata", True](refuse)
        return await continuation(details)


class _GenericOnly:
    """What generated ``add_*Servicer_to_server`` functions get instead of the server: their handlers are
    added as generic handlers only. Registered methods cost every call: grpc.aio's accept loop keeps one
    pending request per registered method besides the generic one and waits on all of them
    (``asyncio.wait``) for each call it accepts, so health's three methods and reflection's one made every
    ModelInfer pay for five futures instead of one."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self.server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.server.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service_name: str, handlers: Any) -> None:
        pass  # the generic handler just added serves them


def _credentials(settings: Any) -> grpc.ServerCredentials | None:
    """TLS as the HTTP port has it (``ssl_certfile``/``ssl_keyfile``; ``ssl_ca_certs``: client certificates)."""
    certfile = getattr(settings, "ssl_certfile", None)
    if certfile is None:
        return None
    key = open(settings.ssl_keyfile, "rb").read()
    chain = open(certfile, "rb").read()
    ca_path = getattr(settings, "ssl_ca_certs", None)
    ca = open(ca_path, "rb").read() if ca_path is not None else None
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=ca is not None)


def build_server(state: Any, shared_port: bool) -> tuple[grpc.aio.Server, Health, int]:
    """The server with every service registered and its port bound (not yet started)."""
    settings = state.settings
    calls = Calls(state)
    interceptors = [_AuthInterceptor(calls)] if getattr(state, "auth", None) is not None else None
    options = [
        ("grpc.so_reuseport", 1 if shared_port else 0),
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", -1),
    ]
    server = grpc.aio.server(interceptors=interceptors, options=options)
    server.add_generic_rpc_handlers([
        _handlers(protos.KSERVE_SERVICE, KServeService(calls), KServeService.unsupported),
        _handlers(protos.PREDICTION_SERVICE, PredictionService(calls), PredictionService.unsupported),
        _handlers(protos.MODEL_SERVICE, ModelService(calls))])
    checker = Health(calls, list(protos.SERVICES))
    health_pb2_grpc.add_HealthServicer_to_server(checker, _GenericOnly(server))
    protos.add_module(health_pb2)
    protos.add_module(reflection_pb2)
    names = [*protos.SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # enable_server_reflection, unregistered
        reflection.aio.ReflectionServicer(names, pool=protos.pool()), _GenericOnly(server))
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else \
        f"{settings.host}:{settings.grpc_port}"
    credentials = _credentials(settings)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as error:  # gRPC's own message names no port
        raise RuntimeError(f"gRPC cannot listen on {address} ({error}): is the port in use? Set --grpc-port "
                           "(BATCHSERVE_GRPC_PORT) to another port, or 0 to serve without gRPC") from None
    return server, checker, port


@contextlib.asynccontextmanager
async def grpc_serving(state: Any, shared_port: bool = False) -> AsyncIterator[int | None]:
    """Serve gRPC while the block runs (nothing when ``grpc_port`` is 0); yields the bound port."""
    settings = state.settings
    if not settings.grpc_port:
        yield None
        return
    server, checker, port = build_server(state, shared_port)
    await server.start()
    log.info("gRPC on %s:%d: %s", settings.host, port, ", ".join(SERVED_NAMES))
    try:
        yield port
    finally:
        state.service.draining = True  # readiness (HTTP and gRPC) says so while the calls in flight finish
        await checker.enter_graceful_shutdown()
        await server.stop(settings.drain_timeout_s or None)
        log.info("gRPC stopped: every accepted call answered")
