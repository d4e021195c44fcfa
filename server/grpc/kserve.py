"""KServe V2 over gRPC: Triton's ``inference.GRPCInferenceService``, what ``tritonclient.grpc`` calls.

ModelInfer takes typed ``contents`` or ``raw_input_contents`` (what tritonclient sends) and answers
raw outputs when the request used raw inputs (Triton's rule), typed contents otherwise. Its deadline
is the earlier of the call's gRPC deadline and ``parameters.timeout`` (microseconds); ``priority`` is
Triton's (1 highest, 0 the default). Calls that need Triton features batchserve does not have
(streaming, shared memory, tracing, model control) answer UNIMPLEMENTED, naming the call.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

import grpc

from server import __version__
from server.core.errors import BadRequest, classify
from server.core.service import RequestContext
from server.grpc import protos
from server.grpc.calls import PROTOCOL, Calls, Malformed, abort, call_timeout, unimplemented
from server.grpc.plans import Planned
from server.grpc.tensors import SplitRequest, v2_inputs, v2_response, v2_schedule_parameters
from server.http.kserve import EXTENSIONS, _schedule
from server.models.repository import ModelVersion

Msg = protos.message


def _version(text: str) -> str | None:
    return text or None


class KServeService:
    """The handlers, by method name; ``server/grpc/server.py`` registers them as one generic handler."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.InferResponse = Msg("inference.ModelInferResponse")

    # ---- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.calls.authorize(context, "health")
        return Msg("inference.ServerLiveResponse")(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.calls.authorize(context, "health")
        service = self.calls.service
        return Msg("inference.ServerReadyResponse")(ready=service.repository.ready and not service.draining)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.calls.authorize(context, "metadata", request.name)
        try:
            self.calls.service.repository.get(request.name, _version(request.version))
        except Exception as error:
            if classify(error).status != 404 and classify(error).status != 503:
                await abort(context, error)
            return Msg("inference.ModelReadyResponse")(ready=False)  # Triton: not ready, not an error
        return Msg("inference.ModelReadyResponse")(ready=True)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.calls.authorize(context, "metadata")
        return Msg("inference.ServerMetadataResponse")(name="batchserve", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def build() -> Any:
            repository = self.calls.service.repository
            mv = repository.get(request.name, _version(request.version))
            versions = [str(v.version) for v in repository.versions(request.name) if v.ready]
            tensor = Msg("inference.ModelMetadataResponse.TensorMetadata")
            signature = mv.signature
            return Msg("inference.ModelMetadataResponse")(
                name=mv.name, versions=versions,
                platform="synthetic" if mv.backend == "synthetic" else "tensorflow_savedmodel",
                inputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in signature.inputs.values()],
                outputs=[tensor(name=s.name, datatype=s.datatype, shape=s.shape) for s in signature.outputs.values()])

        return await self.calls.answer(context, "metadata", request.name, build)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """A Triton model configuration describing what batchserve serves (tritonclient's get_model_config)."""
        def build() -> Any:
            mv = self.calls.service.repository.get(request.name, _version(request.version))
            return Msg("inference.ModelConfigResponse")(config=_model_config(mv))

        return await self.calls.answer(context, "metadata", request.name, build)

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Triton's repository index: every model and each version's state (as ``POST /v2/repository/index``)."""
        await self.calls.authorize(context, "admin")
        try:
            rows = await self.calls.service.repository.index(request.ready)
        except Exception as error:
            await abort(context, error)
        index = Msg("inference.RepositoryIndexResponse.ModelIndex")
        return Msg("inference.RepositoryIndexResponse")(models=[
            index(name=str(row["name"]), version=str(row["version"]), state=str(row["state"]),
                  reason=str(row.get("reason") or "")) for row in rows])

    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Load a model, or load it again with ``parameters["config"]`` (model.yaml keys as JSON) overriding its
        settings: needs ``--model-control-mode explicit``, as the HTTP repository API does."""
        return await self._control(request, context, "load")

    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Unload every version of a model once its queued requests are answered."""
        return await self._control(request, context, "unload")

    async def _control(self, request: Any, context: grpc.aio.ServicerContext, action: str) -> Any:
        name = request.model_name
        await self.calls.authorize(context, "admin", name)
        repository = self.calls.service.repository
        outcome = "error"
        try:
            parameters = {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
                          for key, value in request.parameters.items()}
            allowed = {"load": {"config"}, "unload": {"unload_dependents"}}[action]
            unknown = sorted(set(parameters) - allowed)
            if unknown:  # Triton's file:<path> overrides among them: model files come only from the repository
                raise BadRequest(f"parameter {unknown[0]!r} is not supported; parameters: {sorted(allowed)}")
            if action == "load":
                await repository.load_model(name, parameters.get("config"))
            else:
                await repository.unload_model(name)
            outcome = "ok"
        except Exception as error:
            await abort(context, error)
        finally:
            self.calls.state.metrics.model_control.labels(action, outcome).inc()
        response = "inference.RepositoryModelLoadResponse" if action == "load" else \
            "inference.RepositoryModelUnloadResponse"
        return Msg(response)()

    # ---- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # The hot path, kept lean: it checks a malformed message itself (no ``_checked`` wrapper) and does
        # what ``Calls.infer`` does inline, one coroutine frame fewer on every resumption.
        if type(request) is Planned:  # a known header (server/grpc/plans.py): checked once, answered as bytes
            plan, raw = request.plan, request.raw
            name = plan.name
            calls = self.calls
            if calls.tokens is not None:
                await calls.authorize(context, "infer", name)
            refused = calls.overloaded(name, plan.version)
            if refused is not None:
                await abort(context, refused)
            service = calls.service
            started = perf_counter()
            mv = checked = None
            try:
                mv = service.repository.get(name, plan.version)
                checked = plan.check(mv, raw, service, PROTOCOL)
                if checked is not None:
                    batcher = mv.batcher
                    assert batcher is not None
                    outputs = await batcher.submit(checked.inputs(raw), timeout=call_timeout(context, checked.timeout),
                                                   priority=checked.priority)
                    answer = checked.answer(outputs)
                    if answer is None:  # an output the lean answer does not write: the message, as below
                        answer = self.InferResponse(model_name=mv.name, model_version=str(mv.version),
                                                    id=plan.message.id)
                        v2_response(answer, outputs, checked.names or outputs, True)
            except asyncio.CancelledError:
                service.cancelled(PROTOCOL, name, mv, started)
                raise
            except Exception as error:
                service.failed(PROTOCOL, name, mv, error, started)
                await abort(context, error)
            if checked is not None:
                checked.series.record(200, None, perf_counter() - started)
                return answer
            request, authorized = plan.message, True  # the general path names what the lean one does not take
        else:
            authorized = False
            if type(request) is SplitRequest:  # a large request: its raw contents are views of the received bytes
                request, raw = request.message, request.raw
            elif type(request) is Malformed:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
            else:
                raw = request.raw_input_contents
        name = request.model_name
        calls = self.calls
        if calls.tokens is not None and not authorized:
            await calls.authorize(context, "infer", name)
        if not authorized:  # authorized: a plan's request, judged above
            refused = calls.overloaded(name, request.model_version or None)
            if refused is not None:
                await abort(context, refused)
        service = calls.service

        async def handle(state: RequestContext) -> Any:
            mv = state.model_version = service.repository.get(name, request.model_version or None)
            inputs = v2_inputs(request, raw)
            wanted = [o.name for o in request.outputs] if request.outputs else None
            if wanted:
                unknown = [o for o in wanted if o not in mv.signature.outputs]
                if unknown:
                    raise BadRequest(f"unknown output {unknown[0]!r}; the model has outputs "
                                     f"{sorted(mv.signature.outputs)}")
            timeout, priority = None, 0
            parameters = request.parameters
            if parameters:
                assert mv.batch_config is not None
                timeout, priority = _schedule(v2_schedule_parameters(parameters), mv.batch_config.priority_levels - 1)
            outputs = await service.predict(mv, inputs, timeout=call_timeout(context, timeout), priority=priority)
            response = self.InferResponse(model_name=mv.name, model_version=str(mv.version), id=request.id)
            v2_response(response, outputs, wanted or outputs, bool(raw))
            return response

        try:
            return await service.run(PROTOCOL, name, handle)
        except Exception as error:
            await abort(context, error)

    ModelInfer.checks_malformed = True  # type: ignore[attr-defined]
    ModelInfer.answers_bytes = True  # type: ignore[attr-defined]

    # ---- what batchserve does not do ----------------------------------------------------------------

    async def ModelStreamInfer(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        await unimplemented(context, "ModelStreamInfer (decoupled/streaming models) is not supported by batchserve; "
                                     "use ModelInfer")

    @staticmethod
    def unsupported(method: str) -> Any:
        reasons = {
            "ModelStatistics": "per-model statistics are Prometheus metrics in batchserve: scrape /metrics",
        }

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await unimplemented(context, f"{method} is not supported by batchserve"
                                + (f": {reasons[method]}" if method in reasons else ""))

        return handler


def _model_config(mv: ModelVersion) -> Any:
    enum = protos.pool(protos.KSERVE_SERVICE).FindEnumTypeByName("inference.DataType")

    def data_type(datatype: str) -> int:
        return enum.values_by_name["TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"].number

    batch = mv.batch_config
    max_batch = batch.max_batch_size if batch is not None else 0
    signature = mv.signature

    def dims(shape: tuple[int, ...]) -> list[int]:
        return list(shape[1:]) if max_batch else list(shape)

    config = Msg("inference.ModelConfig")(
        name=mv.name, platform="synthetic" if mv.backend == "synthetic" else "tensorflow_savedmodel",
        backend=mv.backend, max_batch_size=max_batch,
        input=[Msg("inference.ModelInput")(name=s.name, data_type=data_type(s.datatype), dims=dims(s.shape))
               for s in signature.inputs.values()],
        output=[Msg("inference.ModelOutput")(name=s.name, data_type=data_type(s.datatype), dims=dims(s.shape))
                for s in signature.outputs.values()])
    if batch is not None:
        config.dynamic_batching.preferred_batch_size.extend(batch.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = round(batch.max_queue_delay * 1e6)
        config.dynamic_batching.priority_levels = batch.priority_levels
    return config

