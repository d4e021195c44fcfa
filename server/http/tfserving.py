"""The TensorFlow Serving REST API: predict, model status and metadata."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from server.codecs.tfserving import decode_predict, encode_predict
from server.core.errors import error_response, json_response
from server.core.request import InferRequest, served_signature
from server.core.service import Reply
from server.core.vocabulary import Signature, TensorSpec, tf_enum_name
from server.models.catalog import ModelState, ModelVersion

PROTOCOL = "tfserving"
router = APIRouter()


class _HttpCodec:
    """TF Serving's predict over HTTP: the payload is the body (and a header it ignores), read with the
    served signature's dtypes."""

    def decode(self, request: InferRequest, mv: ModelVersion) -> None:
        def signature_of(name: str | None) -> Signature:
            request.signature = name
            return served_signature(request, mv)

        parsed = decode_predict(request.payload[0], signature_of)
        request.inputs, request.state = parsed.inputs, parsed.row_format

    def encode(self, request: InferRequest, mv: ModelVersion, outputs: dict[str, np.ndarray]) -> Reply:
        return Reply(encode_predict(outputs, request.state))


CODEC = _HttpCodec()


def version_status(mv: ModelVersion, config_error: str | None = None) -> dict[str, Any]:
    """A version's status; a broken model.yaml it serves on despite is in error_message (error_code stays OK)."""
    message = mv.error or (f"serving its last good configuration; {config_error}" if config_error and mv.ready else "")
    return {"version": str(mv.version), "state": mv.state.value,
            "status": {"error_code": "OK" if mv.error is None else "UNKNOWN", "error_message": message}}


def _status(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    repository = request.app.state.service.repository
    try:
        versions = repository.versions(name)
        if label is not None or version is not None:
            versions = [repository.get(name, version, label)]
    except Exception as error:
        return error_response(error)
    config_error = repository.config_error(name)
    body: dict[str, Any] = {"model_version_status": [version_status(mv, config_error) for mv in versions]}
    if config_error and not versions:
        body["model_version_status"] = [{"version": "0", "state": ModelState.END.value,
                                         "status": {"error_code": "INVALID_ARGUMENT", "error_message": config_error}}]
    return json_response(body)


@router.get("/v1/models/{name}")
async def status(request: Request, name: str) -> Response:
    return _status(request, name)


@router.get("/v1/models/{name}/versions/{version}")
async def status_version(request: Request, name: str, version: str) -> Response:
    return _status(request, name, version=version)


@router.get("/v1/models/{name}/labels/{label}")
async def status_label(request: Request, name: str, label: str) -> Response:
    return _status(request, name, label=label)


def tensor_info(spec: TensorSpec) -> dict[str, Any]:
    return {"dtype": tf_enum_name(spec.dtype),
            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False},
            "name": spec.name}


def signature_defs(mv: ModelVersion) -> dict[str, Any]:
    """Every signature ``mv`` serves, as TF Serving's metadata lists them (a SignatureDefMap's entries)."""
    assert mv.description is not None
    return {signature.name: {"inputs": {n: tensor_info(s) for n, s in signature.inputs.items()},
                             "outputs": {n: tensor_info(s) for n, s in signature.outputs.items()},
                             "method_name": signature.method_name}
            for signature in (mv.description.signatures or {"": mv.signature}).values()}


def _metadata(request: Request, name: str, version: str | None = None, label: str | None = None) -> Response:
    try:
        mv = request.app.state.service.repository.get(name, version, label)
    except Exception as error:
        return error_response(error)
    body = {
        "model_spec": {"name": name, "signature_name": "", "version": str(mv.version)},
        "metadata": {"signature_def": {"signature_def": signature_defs(mv)}},
    }
    return json_response(body)


@router.get("/v1/models/{name}/metadata")
async def metadata(request: Request, name: str) -> Response:
    return _metadata(request, name)


@router.get("/v1/models/{name}/versions/{version}/metadata")
async def metadata_version(request: Request, name: str, version: str) -> Response:
    return _metadata(request, name, version)


@router.get("/v1/models/{name}/labels/{label}/metadata")
async def metadata_label(request: Request, name: str, label: str) -> Response:
    return _metadata(request, name, label=label)
