"""KServe V2 over gRPC: Triton's ``inference.GRPCInferenceService``, what ``tritonclient.grpc`` calls.

ModelInfer takes typed ``contents`` or ``raw_input_contents`` (what tritonclient sends) and answers
raw outputs when the request used raw inputs (Triton's rule), typed contents otherwise. Its deadline
is the earlier of the call's gRPC deadline and ``parameters.timeout`` (microseconds); ``priority`` is
Triton's (1 highest, 0 the default). Calls that need Triton features batchserve does not have
(streaming, shared memory, tracing, model control) answer UNIMPLEMENTED, naming the call.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import ParseDict

from server import __version__
from server.core.errors import classify
from server.core.request import InferRequest
from server.grpc import protos
from server.grpc.calls import PROTOCOL, Calls, Malformed, abort, call_timeout, unimplemented
from server.grpc.plans import Planned
from server.grpc.tensors import (
    SplitRequest,
    v2_inputs,
    v2_response,
    v2_schedule,
    v2_signature,
    v2_tensor_parameters,
)
from server.http.kserve import EXTENSIONS, config_document, metadata_document, statistics_keys
from server.http.repository_api import control
from server.models.catalog import ModelVersion
from server.observability.model_stats import statistics_document

Msg = protos.message


class KServeService:
    """The handlers, by method name; ``server/grpc/server.py`` registers them as one generic handler."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls

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
            self.calls.service.repository.get(request.name, request.version or None)
        except Exception as error:
            if classify(error).status not in (404, 503):
                await abort(context, error)
            return Msg("inference.ModelReadyResponse")(ready=False)  # Triton: not ready, not an error
        return Msg("inference.ModelReadyResponse")(ready=True)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await self.calls.authorize(context, "metadata")
        return Msg("inference.ServerMetadataResponse")(name="batchserve", version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def build() -> Any:
            repository = self.calls.service.repository
            mv = repository.get(request.name, request.version or None)
            metadata = metadata_document(mv, [v.version for v in repository.versions(request.name) if v.ready])
            del metadata["backend"]  # the HTTP answer's fields but this one: ModelConfig says it over gRPC
            return Msg("inference.ModelMetadataResponse")(**metadata)

        return await self.calls.answer(context, "metadata", request.name, build)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """A Triton model configuration describing what batchserve serves (tritonclient's get_model_config)."""
        def build() -> Any:
            mv = self.calls.service.repository.get(request.name, request.version or None)
            config = ParseDict(config_document(mv), Msg("inference.ModelConfig")())
            return Msg("inference.ModelConfigResponse")(config=config)

        return await self.calls.answer(context, "metadata", request.name, build)

    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Triton's statistics extension (tritonclient's get_inference_statistics), as ``GET .../stats``."""
        await self.calls.authorize(context, "metadata", request.name or "*")  # all models: a token of every model
        try:
            keys = statistics_keys(self.calls.service.repository, request.name, request.version or None)
            document = statistics_document(keys, await self.calls.state.statistics())
        except Exception as error:
            await abort(context, error)
        return ParseDict(document, Msg("inference.ModelStatisticsResponse")())

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
        await self.calls.authorize(context, "admin", request.model_name)
        try:
            await control(self.calls.state, action, request.model_name, _parameters(request))
        except Exception as error:
            await abort(context, error)
        return Msg(f"inference.RepositoryModel{action.capitalize()}Response")()

    # ---- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        kind = type(request)
        if kind is Planned:  # a known header (server/grpc/plans.py): checked once, answered as bytes
            plan = request.plan
            infer = InferRequest(PROTOCOL, plan.name, plan.version, None, PLANNED, (request, context),
                                 started=perf_counter())
            size = plan.size
        elif kind is Malformed:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)
        else:
            split = kind is SplitRequest  # a large request: its raw contents are views of the received bytes
            message, raw = (request.message, request.raw) if split else (request, request.raw_input_contents)
            infer = InferRequest(PROTOCOL, message.model_name, message.model_version or None, None, GENERAL,
                                 (message, raw, context), started=perf_counter())
            size = message.ByteSize() + sum(len(r) for r in raw) * split \
                if self.calls.admission.inflight is not None else 0
        return await self.calls.infer(context, infer, size)

    ModelInfer.checks_malformed = True  # type: ignore[attr-defined]
    ModelInfer.answers_bytes = True  # type: ignore[attr-defined]

    # ---- what batchserve does not do ----------------------------------------------------------------

    @staticmethod
    def unsupported(method: str) -> Any:
        reasons = {"ModelStreamInfer": "ModelStreamInfer (decoupled/streaming models) is not supported by batchserve; "
                                       "use ModelInfer"}
        what = reasons.get(method, f"{method} is not supported by batchserve")

        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await unimplemented(context, what)

        return handler


async def _parameters(request: Any) -> dict[str, Any]:
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for key, value in request.parameters.items()}


class _GeneralCodec:
    """ModelInfer's message (with its raw contents, and the call for its deadline) ⇄ tensors."""

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        message, raw, context = request.payload
        v2_tensor_parameters(message)
        request.inputs = v2_inputs(message, raw)
        request.outputs = [o.name for o in message.outputs] or None
        timeout = None
        if message.parameters:
            timeout, request.priority = v2_schedule(message.parameters)
            request.signature = v2_signature(message.parameters)
        request.timeout = call_timeout(context, timeout)

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Any:
        message, raw = request.payload[0], request.payload[1]
        response = _RESPONSE(model_name=mv.name, model_version=str(mv.version), id=message.id)
        v2_response(response, outputs, request.outputs or outputs, bool(raw))
        return response


class _PlannedCodec:
    """A request that matched a plan: its header checked once per model version, its answer written as
    bytes; one whose header fails the checks is decoded as the general path decodes it, which names the error."""

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        planned, context = request.payload
        checked = request.state = planned.plan.check(mv, planned.raw)
        if checked is None:
            request.codec, request.payload = GENERAL, (planned.plan.message, planned.raw, context)
            GENERAL.decode(request, mv)
            return
        request.inputs, request.checked, request.outputs = checked.inputs(planned.raw), True, checked.names
        request.timeout, request.priority = call_timeout(context, checked.timeout), checked.priority

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Any:
        answer = request.state.answer(outputs)
        if answer is None:  # an output the lean answer does not write: the message, as the general path's
            planned = request.payload[0]
            answer = _RESPONSE(model_name=mv.name, model_version=str(mv.version), id=planned.plan.message.id)
            v2_response(answer, outputs, request.outputs or outputs, True)
        return answer


_RESPONSE = Msg("inference.ModelInferResponse")
GENERAL, PLANNED = _GeneralCodec(), _PlannedCodec()
