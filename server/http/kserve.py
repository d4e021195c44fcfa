"""The KServe V2 inference protocol (what Triton's clients speak), JSON and binary tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server import __version__
from server.codecs.v2 import HEADER_LENGTH, decode_request, encode_response, schedule_parameters, signature_parameter
from server.core.errors import BadRequest, classify, error_response, json_response, message
from server.core.request import InferRequest
from server.core.service import Reply
from server.http.kserve_plans import BinaryPlans, Checked
from server.models.catalog import ModelCatalog, ModelVersion
from server.observability.model_stats import statistics_document

PROTOCOL = "v2"
EXTENSIONS = ["binary_tensor_data", "parameters", "schedule_policy", "model_configuration", "statistics"]
router = APIRouter()


@router.get("/v2")
async def server_metadata() -> Response:
    return json_response({"name": "batchserve", "version": __version__, "extensions": EXTENSIONS})


class _HttpCodec:
    """V2 over HTTP: the payload is the body and its Inference-Header-Content-Length (None: all JSON). A binary
    body whose JSON header came before is decoded and answered by that header's plan (kserve_plans.py)."""

    def __init__(self) -> None:
        self.plans = BinaryPlans()

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        body, header = request.payload
        if header is not None and not header.isdigit():
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header!r}")
        length = int(header) if header is not None else None
        parsed = decode_request(body, length) if length is None else self.plans.decode(request, mv, body, length,
                                                                                          decode_request)
        if parsed is None:  # the header's plan filled it
            return
        request.state = parsed
        request.inputs, request.outputs = parsed.inputs, parsed.outputs
        if parsed.parameters:
            request.timeout, request.priority = schedule_parameters(parsed.parameters)
            request.signature = signature_parameter(parsed.parameters)

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Reply:
        state = request.state
        if type(state) is Checked:  # a plan's: its answer header made once, unless an output needs JSON
            answer = state.answer(request.model, outputs)
            if answer is not None:
                return Reply(answer[0], answer[1], "application/octet-stream")
            state = state.request
        content, header_length = encode_response(request.model, str(mv.version), outputs, state)
        if header_length is None:
            return Reply(content)
        return Reply(content, {HEADER_LENGTH: str(header_length)}, "application/octet-stream")


CODEC = _HttpCodec()


def metadata_document(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
    signature = mv.signature
    return {
        "name": mv.name,
        "versions": [str(v) for v in versions],
        "platform": "synthetic" if mv.backend == "synthetic" else "tensorflow_savedmodel",
        "backend": mv.backend,
        "inputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in signature.inputs.values()],
        "outputs": [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}
                    for s in signature.outputs.values()],
    }


def config_document(mv: ModelVersion) -> dict[str, Any]:
    """Triton's ModelConfig as JSON, describing what batchserve serves (gRPC's ModelConfig is parsed from it)."""
    batch = mv.batch_config
    max_batch = batch.max_batch_size if batch is not None else 0

    def tensors(specs: Any) -> list[dict[str, Any]]:
        return [{"name": s.name, "data_type": "TYPE_STRING" if s.datatype == "BYTES" else f"TYPE_{s.datatype}",
                 "dims": list(s.shape[1:] if max_batch else s.shape)} for s in specs.values()]

    platform = "synthetic" if mv.backend == "synthetic" else "tensorflow_savedmodel"
    config: dict[str, Any] = {"name": mv.name, "platform": platform,
                              "backend": mv.backend, "max_batch_size": max_batch, "input": tensors(mv.signature.inputs),
                              "output": tensors(mv.signature.outputs)}
    if batch is not None:
        config["dynamic_batching"] = {"preferred_batch_size": list(batch.preferred_batch_sizes),
                                      "max_queue_delay_microseconds": round(batch.max_queue_delay * 1e6),
                                      "priority_levels": batch.priority_levels}
    if mv.description is not None:
        config["instance_group"] = [instance_group(mv.name, mv.device, mv.description.instances)]
    return config


def instance_group(name: str, device: str, instances: int) -> dict[str, Any]:
    """Triton's instance group: on GPUs ``count`` instances on each of ``gpus``; on the CPU ``count`` in all."""
    devices = [d for d in device.lower().split(",") if d]
    gpus = [d.rpartition(":")[2] for d in devices if "gpu" in d]
    if gpus and len(gpus) == len(devices) and all(g.isdigit() for g in gpus):
        return {"name": name, "count": instances // len(gpus), "kind": "KIND_GPU", "gpus": [int(g) for g in gpus]}
    return {"name": name, "count": instances, "kind": "KIND_GPU" if gpus else "KIND_CPU"}


def statistics_keys(repository: ModelCatalog, name: str | None, version: str | None) -> list[tuple[str, str]]:
    """The versions a statistics request names: one, a model's ready ones, or every model's (no name)."""
    if name and version:
        mv = repository.get(name, version)
        return [(mv.name, str(mv.version))]
    if name:
        repository.get(name)  # an unknown model: 404; none ready: 503
    return [(mv.name, str(mv.version)) for model in ([name] if name else repository.names())
            for mv in repository.versions(model) if mv.ready]


@router.get("/v2/models/stats")  # before /v2/models/{name}, as Triton (a model named "stats" has no metadata)
async def statistics(request: Request) -> Response:
    return await _statistics(request, None, None)


@router.get("/v2/models/{name}/stats")
async def model_statistics(request: Request, name: str) -> Response:
    return await _statistics(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/stats")
async def model_version_statistics(request: Request, name: str, version: str) -> Response:
    return await _statistics(request, name, version)


async def _statistics(request: Request, name: str | None, version: str | None) -> Response:
    state = request.app.state
    try:
        keys = statistics_keys(state.service.repository, name, version)
        return json_response(statistics_document(keys, await state.statistics()))
    except Exception as error:
        return error_response(error)


@router.get("/v2/models/{name}/config")
async def model_config(request: Request, name: str) -> Response:
    return _config(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/config")
async def model_version_config(request: Request, name: str, version: str) -> Response:
    return _config(request, name, version)


def _config(request: Request, name: str, version: str | None) -> Response:
    try:
        return json_response(config_document(request.app.state.service.repository.get(name, version)))
    except Exception as error:
        return error_response(error)


def _metadata(request: Request, name: str, version: str | None) -> Response:
    repository = request.app.state.service.repository
    try:
        mv = repository.get(name, version)
        versions = [v.version for v in repository.versions(name) if v.ready]
    except Exception as error:
        return error_response(error)
    return json_response(metadata_document(mv, versions))


@router.get("/v2/models/{name}")
async def model_metadata(request: Request, name: str) -> Response:
    return _metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}")
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return _metadata(request, name, version)


def _ready(request: Request, name: str, version: str | None) -> Response:
    try:
        request.app.state.service.repository.get(name, version)
    except Exception as error:
        if classify(error).status == 404:
            return error_response(error)
        return json_response({"name": name, "ready": False, "error": message(error)}, 503)
    return json_response({"name": name, "ready": True})


@router.get("/v2/models/{name}/ready")
async def model_ready(request: Request, name: str) -> Response:
    return _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return _ready(request, name, version)
