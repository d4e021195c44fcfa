"""Hardened limits: header count and size (431), JSON nesting, inputs and outputs per request, declared
shapes against the body before any allocation (400), request bytes in flight per front end (503), requests
a second per token (429). Every refusal is a 4xx or a 503, never a 5xx crash, and the server serves on."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.observe import metric, row_body, synthetic_repository, wait_until
from tests.payloads import INFER
from tests.secure import GuardedServer, bearer, write_tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuardedServer]:
    folder = tmp_path_factory.mktemp("limits")
    process = GuardedServer(synthetic_repository(folder / "repo"), folder / "server.log", poll_interval=0,
                            max_header_count=20, max_header_bytes=4096)
    try:
        yield process.wait_ready()
    finally:
        process.stop()


def healthy(server: GuardedServer) -> bool:
    answer = httpx.post(server.url + INFER, json=row_body(7.0))
    return answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [7.0]


def raw_exchange(server: GuardedServer, request: bytes) -> bytes:
    """Send ``request`` as bytes; the server's whole answer (it closes the connection after a refusal)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before everything was sent
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


@pytest.mark.parametrize(("headers", "path"), [
    ({f"x-h{i}": "v" for i in range(25)}, INFER),  # too many, on the inference route
    ({f"x-h{i}": "v" for i in range(25)}, "/v2/models/syn"),  # and on a FastAPI route
    ({"x-big": "v" * 5000}, INFER),  # too many bytes in one header
    ({f"x-h{i}": "v" * 300 for i in range(15)}, "/metrics"),  # too many bytes altogether
])
def test_headers_beyond_the_limits_are_431(server: GuardedServer, headers: dict[str, str], path: str) -> None:
    answer = httpx.post(server.url + path, json=row_body(1.0), headers=headers)
    assert answer.status_code == 431 and "at most 20 headers and 4096 bytes" in answer.json()["error"]
    assert healthy(server)


def test_headers_within_the_limits_pass(server: GuardedServer) -> None:
    answer = httpx.post(server.url + INFER, json=row_body(1.0), headers={f"x-h{i}": "v" * 100 for i in range(10)})
    assert answer.status_code == 200


def test_a_header_line_that_never_ends_is_cut_off(server: GuardedServer) -> None:
    head = b"POST " + INFER.encode() + b" HTTP/1.1\r\nhost: x\r\nx-endless: " + b"v" * (200 * 1024)
    assert raw_exchange(server, head).startswith(b"HTTP/1.1 431 ")
    assert healthy(server)


def test_headers_arriving_in_pieces_count_once(server: GuardedServer) -> None:
    body = json.dumps(row_body(4.0)).encode()
    head = (f"POST {INFER} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n").encode()
    headers = [f"x-h{i}: {'v' * 250}\r\n".encode() for i in range(12)]  # ~3.1 KB of 4 KB allowed
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (head, *headers, b"\r\n", body):  # separate segments: the server reads them apart
            sock.sendall(piece)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]


def nested(depth: int) -> str:
    return "[" * depth + "1.0" + "]" * depth


def v2_body(data: str) -> str:
    return '{"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": ' + data + "}]}"


@pytest.mark.parametrize("body", [
    v2_body(nested(100_000)), v2_body(nested(1000)), v2_body(nested(70)),
    '{"parameters": ' + '{"a":' * 5000 + "1" + "}" * 5000 + ', "inputs": []}',
])
def test_deeply_nested_json_is_400(server: GuardedServer, body: str) -> None:
    answer = httpx.post(server.url + INFER, content=body.encode(), headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    answer = httpx.post(server.url + "/v1/models/syn:predict", content=body.replace('"inputs"', '"instances"').encode())
    assert answer.status_code == 400, answer.text
    assert healthy(server)


def test_too_many_inputs_or_outputs_are_400_before_decoding(server: GuardedServer) -> None:
    inputs = [{"name": f"i{i}", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]} for i in range(300)]
    answer = httpx.post(server.url + INFER, json={"inputs": inputs})
    assert answer.status_code == 400 and "300 inputs; at most 256" in answer.json()["error"]
    answer = httpx.post(server.url + INFER, json={**row_body(1.0), "outputs": [{"name": "total"}] * 300})
    assert answer.status_code == 400 and "300 outputs; at most 256" in answer.json()["error"]


@pytest.mark.parametrize(("datatype", "shape", "binary"), [
    ("BYTES", [10**12], b"\x01\x00\x00\x00a"),  # would be a trillion-element object array
    ("BYTES", [2**31, 2**31], b""),
    ("FP32", [10**12, 4], b"\x00" * 16),
    ("FP32", [10**18, 10**18, 4], b"\x00" * 16),
])
def test_declared_shapes_are_checked_against_the_body_before_allocation(server: GuardedServer, datatype: str,
                                                                        shape: list[int], binary: bytes) -> None:
    header = json.dumps({"inputs": [{"name": "features", "datatype": datatype, "shape": shape,
                                     "parameters": {"binary_data_size": len(binary)}}]}).encode()
    answer = httpx.post(server.url + INFER, content=header + binary,
                        headers={"Inference-Header-Content-Length": str(len(header)),
                                 "content-type": "application/octet-stream"})
    assert answer.status_code == 400, answer.text
    json_body = {"inputs": [{"name": "features", "datatype": datatype, "shape": shape, "data": [1, 2, 3, 4]}]}
    assert httpx.post(server.url + INFER, json=json_body).status_code == 400
    assert healthy(server)


def test_bytes_in_flight_beyond_the_limit_are_503_until_they_are_answered(start_guarded: Any,
                                                                           tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = start_guarded(synthetic_repository(tmp_path / "repo", gate=gate), poll_interval=0,
                           max_inflight_bytes=1500, warmup=False)
    body = json.dumps(row_body(1.0)).encode()
    body += b" " * (1000 - len(body))  # 1,000 bytes of valid JSON
    gate.touch()
    held: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: held.append(httpx.post(server.url + INFER, content=body, timeout=60)))
    holder.start()
    try:
        wait_until(lambda: Path(f"{gate}.held").exists(), "the first request to reach the model")
        refused = httpx.post(server.url + INFER, content=body)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "max_inflight_bytes=1500" in refused.json()["error"]
        assert metric(server.url, "batchserve_rejected_total", reason="inflight_full") == 1
        chunked = httpx.post(server.url + INFER, content=iter([body[:500], body[500:]]))  # the ASGI path
        assert chunked.status_code == 503 and "max_inflight_bytes=1500" in chunked.json()["error"]
        small = httpx.get(server.url + "/v2/models/syn")  # other routes are not counted
        assert small.status_code == 200
    finally:
        gate.unlink()
        holder.join()
    assert held[0].status_code == 200
    assert httpx.post(server.url + INFER, content=body).status_code == 200  # released
    assert httpx.post(server.url + INFER, content=iter([body[:500], body[500:]])).status_code == 200


def test_requests_a_second_per_token(start_guarded: Any, tmp_path: Path) -> None:
    server = start_guarded(synthetic_repository(tmp_path / "repo"), poll_interval=0, auth_rate_limit=0.01,
                           auth_tokens_file=write_tokens(tmp_path / "tokens.yaml"))
    first = httpx.post(server.url + INFER, json=row_body(1.0), headers=bearer("infer-only"))
    assert first.status_code == 200
    limited = httpx.post(server.url + INFER, json=row_body(1.0), headers=bearer("infer-only"))
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "auth_rate_limit" in limited.json()["error"]
    other = httpx.post(server.url + INFER, json=row_body(1.0), headers=bearer("all"))  # its own bucket
    assert other.status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    text = httpx.get(server.url + "/metrics", headers=bearer("metrics-only")).text
    assert [sample.value for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name == "batchserve_rejected_total" and sample.labels["reason"] == "rate_limited"] == [1.0]


def test_a_refused_token_holds_no_bytes_in_flight(start_guarded: Any, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    server = start_guarded(synthetic_repository(tmp_path / "repo", gate=gate), poll_interval=0, warmup=False,
                           max_inflight_bytes=1500, auth_tokens_file=write_tokens(tmp_path / "tokens.yaml"))
    body = json.dumps(row_body(1.0)).encode()
    body += b" " * (1000 - len(body))
    gate.touch()
    held: list[httpx.Response] = []
    holder = threading.Thread(target=lambda: held.append(
        httpx.post(server.url + INFER, content=body, headers=bearer("infer-only"), timeout=60)))
    holder.start()
    try:
        wait_until(lambda: Path(f"{gate}.held").exists(), "the first request to reach the model")
        assert httpx.post(server.url + INFER, content=body).status_code == 401  # not 503: never counted
        assert httpx.post(server.url + INFER, content=body, headers=bearer("wrong")).status_code == 401
        assert httpx.post(server.url + INFER, content=body, headers=bearer("infer-only")).status_code == 503
    finally:
        gate.unlink()
        holder.join()
    assert held[0].status_code == 200
