"""The KServe V2 inference protocol (what Triton's clients speak), JSON and binary tensors."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server import __version__
from server.codecs import dumps
from server.codecs.v2 import HEADER_LENGTH, decode_request, encode_response
from server.core.errors import BadRequest, classify, error_response, message
from server.core.service import BodyReader, InferenceService, Reply, RequestContext
from server.http.body import read_body
from server.models.repository import ModelVersion

PROTOCOL = "v2"
EXTENSIONS = ["binary_tensor_data", "parameters", "schedule_policy"]
router = APIRouter()


def _service(request: Request) -> InferenceService:
    return request.app.state.service  # type: ignore[no-any-return]


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status, media_type="application/json")




@router.get("/v2")
async def server_metadata() -> Response:
    return _json({"name": "batchserve", "version": __version__, "extensions": EXTENSIONS})


def _schedule(parameters: dict[str, Any], levels: int) -> tuple[float | None, int]:
    """V2 ``timeout`` (microseconds) and ``priority`` (Triton's: 1 highest, 0 default) as batcher terms."""
    timeout = parameters.get("timeout")
    if timeout is not None:
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise BadRequest(f"parameters.timeout must be a positive number of microseconds, got {timeout!r}")
        timeout = timeout / 1e6
    priority = parameters.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= levels:
        raise BadRequest(f"parameters.priority must be an integer in 0..{levels} (1 is highest, 0 default)")
    return timeout, (levels - priority if priority else 0)


async def infer_request(service: InferenceService, name: str, version: str | None, read: BodyReader,
                header: str | None) -> Reply:
    """One V2 infer request, whichever HTTP front end received it; ``header`` is Inference-Header-Content-Length."""

    async def handle(context: RequestContext) -> Reply:
        body = await read()
        mv = context.model_version = service.repository.get(name, version)
        if header is not None and not header.isdigit():
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header!r}")
        parsed = decode_request(body, int(header) if header is not None else None)
        unknown = [o for o in parsed.outputs or () if o not in mv.signature.outputs]
        if unknown:
            raise BadRequest(f"unknown output {unknown[0]!r}; the model has outputs {sorted(mv.signature.outputs)}")
        assert mv.batch_config is not None
        timeout, priority = _schedule(parsed.parameters, mv.batch_config.priority_levels - 1)
        outputs = await service.predict(mv, parsed.inputs, timeout=timeout, priority=priority)
        content, header_length = encode_response(name, str(mv.version), outputs, parsed)
        if header_length is None:
            return Reply(content)
        return Reply(content, {HEADER_LENGTH: str(header_length)}, "application/octet-stream")

    return await service.respond(PROTOCOL, name, handle)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    service = _service(request)
    reply = await infer_request(service, name, version, lambda: read_body(request, service.settings.max_body_bytes),
                        request.headers.get(HEADER_LENGTH))
    return reply.response()


@router.post("/v2/models/{name}/infer")
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/v2/models/{name}/versions/{version}/infer")
async def infer_version(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


def _model_metadata(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
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
    repository = _service(request).repository
    try:
        mv = repository.get(name, version)
        versions = [v.version for v in repository.versions(name) if v.ready]
    except Exception as error:
        return error_response(error)
    return _json(_model_metadata(mv, versions))


@router.get("/v2/models/{name}")
async def model_metadata(request: Request, name: str) -> Response:
    return _metadata(request, name, None)


@router.get("/v2/models/{name}/versions/{version}")
async def model_version_metadata(request: Request, name: str, version: str) -> Response:
    return _metadata(request, name, version)


def _ready(request: Request, name: str, version: str | None) -> Response:
    try:
        _service(request).repository.get(name, version)
    except Exception as error:
        if classify(error).status == 404:
            return error_response(error)
        return _json({"name": name, "ready": False, "error": message(error)}, 503)
    return _json({"name": name, "ready": True})


@router.get("/v2/models/{name}/ready")
async def model_ready(request: Request, name: str) -> Response:
    return _ready(request, name, None)


@router.get("/v2/models/{name}/versions/{version}/ready")
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    return _ready(request, name, version)
