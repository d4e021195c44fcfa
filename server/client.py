"""``AsyncClient``: how a Python service calls batchserve (or any KServe V2 / TF Serving server).

Binary V2 by default: tensors travel as raw bytes, the cheapest format for both
sides. Pooled connections, retries with backoff on 503 only, typed errors.
``transport="grpc"`` speaks KServe V2 over gRPC instead (raw contents), with the same
API, errors (gRPC status codes mapped to the HTTP ones) and retries.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import grpc
import httpx
import numpy as np
import orjson

from server.codecs.v2 import HEADER_LENGTH, decode_response, encode_request, request_headers
from server.grpc.transport import GrpcTransport

Hook = Callable[[Any], Any]
T = TypeVar("T")


class ClientError(Exception):
    """An error answer from the server; ``status`` is the HTTP status."""

    status = 0

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class BadRequestError(ClientError):
    status = 400


class ModelNotFoundError(ClientError):
    status = 404


class PayloadTooLargeError(ClientError):
    status = 413


class UnauthorizedError(ClientError):
    status = 401


class ForbiddenError(ClientError):
    status = 403


class ServerError(ClientError):
    status = 500


class ServiceUnavailableError(ClientError):
    status = 503


class DeadlineExceededError(ClientError):
    status = 504


_ERRORS: dict[int, type[ClientError]] = {cls.status: cls for cls in ClientError.__subclasses__()}
# gRPC status code name -> the HTTP status the server gives the same failure (server/grpc/status.py)
_GRPC_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                "RESOURCE_EXHAUSTED": 503, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "CANCELLED": 499,
                "INTERNAL": 500}


async def _grpc_answer(call: Awaitable[T]) -> T:
    """A gRPC call's answer, or its failure (grpc.aio.AioRpcError) as the ClientError its HTTP status would give."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        status = _GRPC_STATUS.get(error.code().name, 500)
        raise _ERRORS.get(status, ClientError)(error.details() or error.code().name, status) from None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        text = orjson.loads(response.content)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        text = response.text
    kind = _ERRORS.get(response.status_code, ClientError)
    raise kind(text, response.status_code)


def _tfserving_value(arr: np.ndarray) -> Any:
    if arr.dtype == object or arr.dtype.kind in "SU":
        flat = [{"b64": base64.b64encode(v if isinstance(v, bytes) else str(v).encode()).decode()}
                for v in arr.reshape(-1)]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist()
    return np.ascontiguousarray(arr)


class AsyncClient:
    """A pooled async client for one server; use as ``async with AsyncClient(url) as client``."""

    def __init__(self, base_url: str, protocol: Literal["v2", "tfserving"] = "v2", *, binary: bool = True,
                 timeout: float = 30.0, retries: int = 3, backoff: float = 0.05, max_connections: int = 100,
                 preprocess: Mapping[str, Hook] | None = None, postprocess: Mapping[str, Hook] | None = None,
                 transport: Literal["http", "grpc"] = "http", token: str | None = None) -> None:
        """``transport="grpc"``: ``base_url`` is the gRPC port (``host:8001`` or ``grpc://host:8001``), V2 only.
        ``token``: sent as ``Authorization: Bearer`` (gRPC: ``authorization`` metadata) to a server with tokens."""
        if protocol not in ("v2", "tfserving"):
            raise ValueError(f"protocol must be 'v2' or 'tfserving', got {protocol!r}")
        if transport not in ("http", "grpc") or (transport == "grpc" and protocol != "v2"):
            raise ValueError(f"transport must be 'http', or 'grpc' with protocol 'v2'; got {transport!r}")
        auth = {"authorization": f"Bearer {token}"} if token else {}
        self._grpc = GrpcTransport(base_url, auth) if transport == "grpc" else None
        if self._grpc is not None:
            base_url = "http://" + self._grpc.target  # the HTTP pool is then never used
        self.timeout = timeout
        self.protocol = protocol
        self.binary = binary and protocol == "v2"
        self.retries = retries
        self.backoff = backoff
        self.preprocess = dict(preprocess or {})
        self.postprocess = dict(postprocess or {})
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=auth)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._grpc is not None:
            await self._grpc.aclose()

    async def predict(self, model: str, inputs: Any, version: int | str | None = None, *,
                      timeout: float | None = None, priority: int | None = None) -> Any:
        """Run one request; returns the output arrays (after the model's postprocess hook, if any).

        ``inputs`` is a dict of arrays, or anything the model's preprocess hook turns into one.
        ``timeout`` (seconds) becomes the server-side deadline (V2 only); the HTTP or gRPC call is given
        one second more, so the server's 504 arrives instead of a client-side timeout. 503s are retried.
        """
        if model in self.preprocess:
            inputs = self.preprocess[model](inputs)
        tensors = {k: np.asarray(v) for k, v in dict(inputs).items()}
        parameters: dict[str, int] = {}
        if timeout is not None:
            parameters["timeout"] = int(timeout * 1e6)
        if priority is not None:
            parameters["priority"] = priority
        versioned = model + (f"/versions/{version}" if version is not None else "")
        if self._grpc is not None:
            infer = functools.partial(self._grpc.infer, model, None if version is None else str(version), tensors,
                                      parameters, timeout + 1.0 if timeout is not None else self.timeout)
            outputs = await self._retrying(lambda: _grpc_answer(infer()))
        elif self.protocol == "v2":
            body, header_length = encode_request(tensors, self.binary, parameters)
            response = await self._post(f"/v2/models/{versioned}/infer", body, request_headers(header_length), timeout)
            length = response.headers.get(HEADER_LENGTH)
            outputs = decode_response(response.content, int(length) if length else None)
        else:
            body = orjson.dumps({"inputs": {k: _tfserving_value(v) for k, v in tensors.items()}},
                                option=orjson.OPT_SERIALIZE_NUMPY)
            response = await self._post(f"/v1/models/{versioned}:predict", body,
                                        {"Content-Type": "application/json"}, timeout)
            answer = orjson.loads(response.content)["outputs"]
            named = answer if isinstance(answer, dict) else {"output": answer}
            outputs = {k: np.asarray(v) for k, v in named.items()}
        if model in self.postprocess:
            return self.postprocess[model](outputs)
        return outputs

    async def _post(self, path: str, body: bytes, headers: dict[str, str], timeout: float | None) -> httpx.Response:
        async def send() -> httpx.Response:
            response = await self._http.post(path, content=body, headers=headers,
                                             timeout=timeout + 1.0 if timeout is not None else httpx.USE_CLIENT_DEFAULT)
            _raise_for(response)
            return response

        return await self._retrying(send)

    async def _retrying(self, send: Callable[[], Awaitable[T]]) -> T:
        """``send()``, sent again after a backoff while it fails with 503, at most ``retries`` times."""
        attempt = 0
        while True:
            try:
                return await send()
            except ServiceUnavailableError:
                if attempt >= self.retries:
                    raise
            await asyncio.sleep(min(2.0, self.backoff * 2**attempt) * (0.5 + random.random()))
            attempt += 1

    async def metadata(self, model: str) -> dict[str, Any]:
        if self._grpc is not None:
            return await _grpc_answer(self._grpc.metadata(model))
        response = await self._http.get(f"/v2/models/{model}")
        _raise_for(response)
        return orjson.loads(response.content)  # type: ignore[no-any-return]

    async def ready(self, model: str | None = None) -> bool:
        if self._grpc is not None:
            return await self._grpc.ready(model)
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        return (await self._http.get(path)).status_code == 200
