"""HTTPS with a certificate made at run time; mutual TLS with a client CA; TLS and tokens together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observe import row_body, synthetic_repository
from tests.secure import bearer, self_signed, trusting, write_tokens


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return synthetic_repository(tmp_path / "repo")


@pytest.mark.parametrize("frontends", [1, 2])
def test_https_with_the_certificate_and_refused_without(start_guarded: Any, repository: Path, tmp_path: Path,
                                                        frontends: int) -> None:
    cert, key = self_signed(tmp_path)
    server = start_guarded(repository, scheme="https", client={"verify": trusting(cert)}, poll_interval=0,
                           ssl_certfile=cert, ssl_keyfile=key, frontends=frontends)
    with httpx.Client(verify=trusting(cert)) as http:
        answer = http.post(f"{server.url}/v2/models/syn/infer", json=row_body(2.0))
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0]
        assert http.get(f"{server.url}/v2/models/syn").status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/v2/health/ready")  # the system's CAs do not know a self-signed certificate
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server.port}/v2/health/ready")  # plain HTTP on the TLS port


def test_mutual_tls_needs_a_client_certificate_signed_by_the_ca(start_guarded: Any, repository: Path,
                                                                tmp_path: Path) -> None:
    ca = self_signed(tmp_path, "ca")
    cert, key = self_signed(tmp_path, "server", ca=ca)
    client = self_signed(tmp_path, "client", ca=ca)
    stranger = self_signed(tmp_path, "stranger")  # self-signed: not from the CA
    server = start_guarded(repository, scheme="https", client={"verify": trusting(ca[0], client)}, poll_interval=0,
                           ssl_certfile=cert, ssl_keyfile=key, ssl_ca_certs=ca[0])
    with httpx.Client(verify=trusting(ca[0], client)) as http:
        assert http.post(f"{server.url}/v2/models/syn/infer", json=row_body(1.0)).status_code == 200
    for context in (trusting(ca[0]), trusting(ca[0], stranger)):
        with pytest.raises(httpx.HTTPError), httpx.Client(verify=context) as http:
            http.get(f"{server.url}/v2/health/ready")


def test_tls_and_tokens_together(start_guarded: Any, repository: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = start_guarded(repository, scheme="https", client={"verify": trusting(cert)}, poll_interval=0,
                           ssl_certfile=cert, ssl_keyfile=key, auth_tokens_file=write_tokens(tmp_path / "t.yaml"))
    with httpx.Client(verify=trusting(cert), base_url=server.url) as http:
        assert http.post("/v2/models/syn/infer", json=row_body(1.0)).status_code == 401
        assert http.post("/v2/models/syn/infer", json=row_body(1.0), headers=bearer("infer-only")).status_code == 200
