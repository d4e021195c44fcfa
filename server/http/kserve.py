"""The KServe V2 inference protocol (what Triton's clients speak), JSON and binary tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server import __version__
from server.codecs.v2 import HEADER_LENGTH, decode_request, encode_response, schedule_parameters
from server.core.errors import BadRequest, classify, error_response, json_response, message
from server.core.request import InferRequest
from server.core.service import Reply
from server.models.catalog import ModelVersion

PROTOCOL = "v2"
EXTENSIONS = ["binary_tensor_data", "parameters", "schedule_policy"]
router = APIRouter()


@router.get("/v2")
async def server_metadata() -> Response:
    return json_response({"name": "batchserve", "version": __version__, "extensions": EXTENSIONS})


class _HttpCodec:
    """V2 over HTTP: the payload is the body and its Inference-Header-Content-Length (None: all JSON)."""

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        body, header = request.payload
        if header is not None and not header.isdigit():
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header!r}")
        parsed = request.state = decode_request(body, int(header) if header is not None else None)
        request.inputs, request.outputs = parsed.inputs, parsed.outputs
        if parsed.parameters:
            request.timeout, request.priority = schedule_parameters(parsed.parameters)

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Reply:
        content, header_length = encode_response(request.model, str(mv.version), outputs, request.state)
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
