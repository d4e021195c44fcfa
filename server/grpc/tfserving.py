"""TF Serving over gRPC: ``tensorflow.serving.PredictionService`` and ``ModelService``, what
``tensorflow-serving-api``'s ``PredictionServiceStub`` and ``ModelServiceStub`` call.

``model_spec`` is honoured as TF Serving does: ``name``, ``version`` or ``version_label``,
``signature_name`` (empty or the served one); ``output_filter`` selects outputs. Inputs are read from
``tensor_content`` or the typed ``*_val`` fields; outputs are written in the typed fields, as TF
Serving's Predict answers. The call's gRPC deadline is the request's deadline. Classify, Regress and
MultiInference (tf.Example models) answer UNIMPLEMENTED.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import ParseDict

from server.core.errors import BadRequest
from server.core.request import InferRequest
from server.grpc import protos
from server.grpc.calls import PROTOCOL, Calls, abort, call_timeout, unimplemented
from server.grpc.tensors import fill_tf_tensor, tf_tensor
from server.http.tfserving import signature_defs, version_status
from server.models.catalog import ModelState, ModelVersion
from server.models.control import serve_exactly

Msg = protos.message


def _version(spec: Any) -> tuple[int | None, str | None]:
    """A ModelSpec's version and label (one oneof: at most one is set)."""
    return spec.version.value if spec.HasField("version") else None, spec.version_label or None


def _model_spec(mv: ModelVersion, signature: str = "") -> dict[str, Any]:
    """A ModelSpec naming ``mv``, as a message's constructor takes it."""
    return {"name": mv.name, "version": {"value": mv.version}, "signature_name": signature}


class _PredictCodec:
    """PredictRequest (and the call, for its deadline) ⇄ tensors; outputs in the typed fields, as TF Serving's."""

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        message, context = request.payload
        request.signature = message.model_spec.signature_name
        request.inputs = {key: tf_tensor(key, proto) for key, proto in message.inputs.items()}
        request.outputs = list(message.output_filter) or None
        request.timeout = call_timeout(context)

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Any:
        response = _RESPONSE(model_spec=_model_spec(mv, request.signature or mv.signature.name))
        for key in request.outputs or outputs:
            fill_tf_tensor(response.outputs[key], outputs[key])
        return response


_RESPONSE = Msg("tensorflow.serving.PredictResponse")
CODEC = _PredictCodec()


class PredictionService:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def Predict(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        spec = request.model_spec
        infer = InferRequest(PROTOCOL, spec.name, *_version(spec), CODEC, (request, context), started=perf_counter())
        return await self.calls.infer(context, infer, request.ByteSize() if self.calls.admission.inflight else 0)

    async def GetModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def build() -> Any:
            fields = list(request.metadata_field)
            if not fields:
                raise BadRequest("GetModelMetadataRequest must name at least one metadata_field ('signature_def')")
            unsupported = [f for f in fields if f != "signature_def"]
            if unsupported:
                raise BadRequest(f"metadata_field {unsupported[0]!r} is not supported; supported: 'signature_def'")
            spec = request.model_spec
            mv = self.calls.service.repository.get(spec.name, *_version(spec))
            signature_map = ParseDict({"signature_def": signature_defs(mv)},
                                      Msg("tensorflow.serving.SignatureDefMap")())
            response = Msg("tensorflow.serving.GetModelMetadataResponse")(model_spec=_model_spec(mv))
            response.metadata["signature_def"].Pack(signature_map, deterministic=True)  # not upb's hash order
            return response

        return await self.calls.answer(context, "metadata", request.model_spec.name, build)

    @staticmethod
    def unsupported(method: str) -> Any:
        """Classify, Regress and MultiInference."""
        async def handler(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await unimplemented(context, f"{method} is not supported by batchserve (it serves predict signatures): "
                                         "use Predict")

        return handler


class ModelService:
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    async def GetModelStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        def build() -> Any:
            repository = self.calls.service.repository
            spec = request.model_spec
            versions = repository.versions(spec.name)
            version, label = _version(spec)
            if version is not None or label is not None:
                versions = [repository.get(spec.name, version, label)]
            config_error = repository.config_error(spec.name)
            answer = [version_status(mv, config_error) for mv in versions]  # the HTTP answer's, as JSON
            if config_error and not versions:
                answer = [{"state": ModelState.END.value,
                           "status": {"error_code": "INVALID_ARGUMENT", "error_message": config_error}}]
            return ParseDict({"model_version_status": answer}, Msg("tensorflow.serving.GetModelStatusResponse")())

        return await self.calls.answer(context, "metadata", request.model_spec.name, build)

    async def HandleReloadConfigRequest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Serve exactly the models the config lists, as TF Serving does: each is loaded again (a changed
        model.yaml applies), every other loaded model is unloaded. Needs ``--model-control-mode explicit``
        and an ``admin`` token that covers every model it touches. Models come only from the repository:
        ``base_path`` and ``model_platform`` are not used."""
        repository = self.calls.service.repository
        kind = request.config.WhichOneof("config")
        if kind != "model_config_list":
            await abort(context, BadRequest(f"config must hold a model_config_list (got {kind or 'nothing'}): "
                                            "custom model configs are not supported"))
        names = [entry.name for entry in request.config.model_config_list.config]
        try:
            loaded = {str(row["name"]) for row in await repository.index() if row["version"]}
        except Exception as error:
            await abort(context, error)
        for name in sorted(set(names) | loaded):  # abort raises: outside the try below
            await self.calls.authorize(context, "admin", name)
        outcome = "error"
        try:
            await serve_exactly(repository, names)
            outcome = "ok"
        except Exception as error:
            await abort(context, error)
        finally:
            self.calls.state.metrics.model_control.labels("reload", outcome).inc()
        return Msg("tensorflow.serving.ReloadConfigResponse")(status=Msg("tensorflow.serving.StatusProto")())
