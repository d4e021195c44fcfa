"""The client side of KServe V2 over gRPC, for ``server.client.AsyncClient(..., transport="grpc")``.

One ``grpc.aio`` channel (HTTP/2 multiplexes every call), created on first use so the client can be
built outside a running event loop. Tensors travel as ``raw_input_contents`` and come back raw. Calls
are made with the pool's message classes (``protos``): no generated stubs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np

from server.grpc import protos
from server.grpc.tensors import v2_outputs, v2_request

_SERVICE = f"/{protos.KSERVE_SERVICE}/"


class GrpcTransport:
    def __init__(self, url: str, metadata: Mapping[str, str] | None = None) -> None:
        self.target = re.sub(r"^(grpc|https?)://", "", url).rstrip("/")  # host:port
        self.call_metadata = tuple((k.lower(), v) for k, v in (metadata or {}).items()) or None
        self._channel: grpc.aio.Channel | None = None
        self._calls: dict[str, Any] = {}

    def _call(self, method: str) -> Any:
        """``method``'s callable, sending ``inference.<method>Request`` and parsing its ``Response``."""
        call = self._calls.get(method)
        if call is None:
            if self._channel is None:
                # the server's max_body_bytes is the limit that matters: none here. A connection of its own
                # (not shared with other clients in the process), so several clients spread over front ends.
                self._channel = grpc.aio.insecure_channel(self.target, options=[
                    ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1),
                    ("grpc.use_local_subchannel_pool", 1)])
            call = self._calls[method] = self._channel.unary_unary(
                _SERVICE + method, request_serializer=protos.message(f"inference.{method}Request").SerializeToString,
                response_deserializer=protos.message(f"inference.{method}Response").FromString)
        return call

    async def infer(self, model: str, version: str | None, inputs: Mapping[str, np.ndarray],
                    parameters: Mapping[str, int], deadline: float | None) -> dict[str, np.ndarray]:
        request = protos.message("inference.ModelInferRequest")(model_name=model, model_version=version or "")
        for key, value in parameters.items():
            request.parameters[key].int64_param = value
        v2_request(request, inputs)
        return v2_outputs(await self._call("ModelInfer")(request, timeout=deadline, metadata=self.call_metadata))

    async def metadata(self, model: str) -> dict[str, Any]:
        """ModelMetadata in the HTTP JSON's shape."""
        request = protos.message("inference.ModelMetadataRequest")(name=model)
        answer = await self._call("ModelMetadata")(request, metadata=self.call_metadata)

        def tensors(entries: Any) -> list[dict[str, Any]]:
            return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in entries]

        return {"name": answer.name, "versions": list(answer.versions), "platform": answer.platform,
                "inputs": tensors(answer.inputs), "outputs": tensors(answer.outputs)}

    async def ready(self, model: str | None) -> bool:
        method, fields = ("ModelReady", {"name": model}) if model else ("ServerReady", {})
        request = protos.message(f"inference.{method}Request")(**fields)
        try:
            return bool((await self._call(method)(request, metadata=self.call_metadata)).ready)
        except grpc.aio.AioRpcError:
            return False

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
            self._calls.clear()
