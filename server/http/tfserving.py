"""The TensorFlow Serving REST API: predict, model status and metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.codecs import dumps
from server.codecs.tfserving import decode_predict, encode_predict
from server.core.errors import BadRequest, error_response
from server.core.service import BodyReader, InferenceService, Reply, RequestContext
from server.core.vocabulary import Signature, TensorSpec, tf_enum_name
from server.http.body import read_body
from server.models.repository import ModelState, ModelVersion

PROTOCOL = "tfserving"
router = APIRouter()


def _service(request: Request) -> InferenceService:
    return request.app.state.service  # type: ignore[no-any-return]


async def predict_request(service: InferenceService, name: str, version: str | None, label: str | None,
                          read: BodyReader) -> Reply:
    """One TF Serving predict request, whichever HTTP front end received it."""

    async def handle(context: RequestContext) -> Reply:
        body = await read()
        mv = context.model_version = service.repository.get(name, version, label)

        def signature_of(signature_name: str | None) -> Signature:
            if signature_name not in (None, "", mv.signature.name):
                raise BadRequest(f"signature {signature_name!r} is not served for model {name!r}; "
                                 f"served: {mv.signature.name!r}")
            return mv.signature

        parsed = decode_predict(body, signature_of)
        outputs = await service.predict(mv, parsed.inputs)
        return Reply(encode_predict(outputs, parsed.row_format))

    return await service.respond(PROTOCOL, name, handle)


async def _predict(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    service = _service(request)
    reply = await predict_request(service, name, version, label,
                                  lambda: read_body(request, service.settings.max_body_bytes))
    return reply.response()


@router.post("/v1/models/{name}:predict")
async def predict(request: Request, name: str) -> Response:
    return await _predict(request, name)


@router.post("/v1/models/{name}/versions/{version}:predict")
async def predict_version(request: Request, name: str, version: str) -> Response:
    return await _predict(request, name, version=version)


@router.post("/v1/models/{name}/labels/{label}:predict")
async def predict_label(request: Request, name: str, label: str) -> Response:
    return await _predict(request, name, label=label)




def _version_status(mv: ModelVersion) -> dict[str, Any]:
    failed = mv.error is not None
    return {
        "version": str(mv.version),
        "state": mv.state.value,
        "status": {"error_code": "UNKNOWN" if failed else "OK", "error_message": mv.error or ""},
    }


def _status(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    repository = _service(request).repository
    try:
        versions = repository.versions(name)
        if label is not None or version is not None:
            versions = [repository.get(name, version, label)]
    except Exception as error:
        return error_response(error)
    body: dict[str, Any] = {"model_version_status": [_version_status(mv) for mv in versions]}
    config_error = repository.config_error(name)
    if config_error and not versions:
        body["model_version_status"] = [{"version": "0", "state": ModelState.END.value,
                                         "status": {"error_code": "INVALID_ARGUMENT", "error_message": config_error}}]
    return Response(dumps(body), media_type="application/json")


@router.get("/v1/models/{name}")
async def status(request: Request, name: str) -> Response:
    return _status(request, name)


@router.get("/v1/models/{name}/versions/{version}")
async def status_version(request: Request, name: str, version: str) -> Response:
    return _status(request, name, version=version)


@router.get("/v1/models/{name}/labels/{label}")
async def status_label(request: Request, name: str, label: str) -> Response:
    return _status(request, name, label=label)


def _tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {
        "dtype": tf_enum_name(spec.dtype),
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False},
        "name": spec.name,
    }


def _metadata(request: Request, name: str, version: str | None = None) -> Response:
    try:
        mv = _service(request).repository.get(name, version)
    except Exception as error:
        return error_response(error)
    signature = mv.signature
    body = {
        "model_spec": {"name": name, "signature_name": "", "version": str(mv.version)},
        "metadata": {"signature_def": {"signature_def": {signature.name: {
            "inputs": {n: _tensor_info(s) for n, s in signature.inputs.items()},
            "outputs": {n: _tensor_info(s) for n, s in signature.outputs.items()},
            "method_name": signature.method_name,
        }}}},
    }
    return Response(dumps(body), media_type="application/json")


@router.get("/v1/models/{name}/metadata")
async def metadata(request: Request, name: str) -> Response:
    return _metadata(request, name)


@router.get("/v1/models/{name}/versions/{version}/metadata")
async def metadata_version(request: Request, name: str, version: str) -> Response:
    return _metadata(request, name, version)
