"""TLS on the gRPC port with the HTTPS certificate; mutual TLS with a client CA (certificates made at run time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.observe import synthetic_repository
from tests.payloads import grpc_infer_request, grpc_totals
from tests.secure import self_signed, trusting

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")


def infer(channel: grpc.Channel, value: float) -> list[float]:
    response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_infer_request(value), timeout=30)
    return grpc_totals(response)


def test_grpc_over_tls_and_refused_in_plaintext(start_guarded: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = start_guarded(synthetic_repository(tmp_path / "repo"), scheme="https",
                           client={"verify": trusting(cert)}, poll_interval=0, ssl_certfile=cert, ssl_keyfile=key)
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    with grpc.secure_channel(server.grpc_target, credentials) as channel:
        assert infer(channel, 3.0) == [3.0]
    with grpc.insecure_channel(server.grpc_target) as channel, pytest.raises(grpc.RpcError) as raised:
        infer(channel, 1.0)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_mutual_tls_needs_a_client_certificate(start_guarded: Any, tmp_path: Path) -> None:
    ca = self_signed(tmp_path, "ca")
    cert, key = self_signed(tmp_path, "server", ca=ca)
    client = self_signed(tmp_path, "client", ca=ca)
    stranger = self_signed(tmp_path, "stranger")
    server = start_guarded(synthetic_repository(tmp_path / "repo"), scheme="https",
                           client={"verify": trusting(ca[0], client)}, poll_interval=0, ssl_certfile=cert,
                           ssl_keyfile=key, ssl_ca_certs=ca[0])
    root = ca[0].read_bytes()
    good = grpc.ssl_channel_credentials(root, client[1].read_bytes(), client[0].read_bytes())
    with grpc.secure_channel(server.grpc_target, good) as channel:
        assert infer(channel, 5.0) == [5.0]
    for credentials in (grpc.ssl_channel_credentials(root),
                        grpc.ssl_channel_credentials(root, stranger[1].read_bytes(), stranger[0].read_bytes())):
        with grpc.secure_channel(server.grpc_target, credentials) as channel, pytest.raises(grpc.RpcError) as raised:
            infer(channel, 1.0)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
