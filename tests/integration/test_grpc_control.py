"""gRPC deadlines, cancellation, a full queue, SIGTERM, metrics, message size, health, reflection and tokens,
with one front end and with two around the engine.

Events are ordered by what the server shows: a synthetic model held by a gate file, and the in-flight
and queue-depth gauges (tests/observe.py). Requests go through Triton's generated stub over grpc.aio.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..observe import metric, rows_queued, synthetic_repository, until
from ..payloads import grpc_infer_request as infer_request
from ..payloads import grpc_totals as totals

service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
service_pb2_grpc = pytest.importorskip("tritonclient.grpc.service_pb2_grpc")


@pytest.fixture(params=[1, 2], ids=["1-frontend", "2-frontends"])
def frontends(request: pytest.FixtureRequest) -> int:
    return int(request.param)


async def hold(stub, url: str, value: float):
    """One row sent to ``syn`` (its gate held); returns the pending call once its batch is computing."""
    call = stub.ModelInfer(infer_request(value))
    await until(lambda: metric(url, "batchserve_inflight_batches", model="syn") == 1, "a batch computing")
    return call


def grpc_requests(url: str, code: str) -> float:
    return metric(url, "batchserve_requests_total", model="syn", protocol="grpc", code=code)


async def test_full_queue_is_resource_exhausted_with_the_retry_delay(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_queue_size=8, max_batch_size=1),
                          poll_interval=0, frontends=frontends)
    gate.touch()
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        computing = await hold(stub, server.url, 0)
        queued = [stub.ModelInfer(infer_request(i)) for i in range(1, 9)]
        await rows_queued(server.url, 8)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(infer_request(99))
        error = raised.value
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue full: 8 rows waiting, 1 more would exceed max_queue_size=8" in error.details()
        trailing = dict(error.trailing_metadata())
        assert int(trailing["retry-after"]) >= 1
        assert int(trailing["grpc-retry-pushback-ms"]) == 1000 * int(trailing["retry-after"])
        gate.unlink()
        answers = [await call for call in [computing, *queued]]
    assert [totals(a) for a in answers] == [[float(i)] for i in range(9)]
    assert metric(server.url, "batchserve_rejected_total", model="syn", reason="queue_full") == 1
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 9
    assert grpc_requests(server.url, "200") == 9 and grpc_requests(server.url, "503") == 1


async def test_deadlines_are_the_requests_and_expired_requests_never_run(start_server, tmp_path):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), poll_interval=0)
    gate.touch()
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        computing = await hold(stub, server.url, 1)
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # V2 parameters.timeout, a long gRPC deadline
            await stub.ModelInfer(infer_request(2, timeout_us=1000), timeout=60)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "deadline" in raised.value.details()
        assert grpc_requests(server.url, "504") == 1
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # the call's own gRPC deadline
            await stub.ModelInfer(infer_request(3), timeout=0.3)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await until(lambda: grpc_requests(server.url, "504") + grpc_requests(server.url, "499") == 2,
                    "the second expired call counted")
        await rows_queued(server.url, 0)
        gate.unlink()
        assert totals(await computing) == [1.0]
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 1  # neither late call ran


async def test_a_cancelled_call_leaves_the_queue(start_server, tmp_path):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate, max_batch_size=1), poll_interval=0)
    gate.touch()
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        computing = await hold(stub, server.url, 5)
        leaving = stub.ModelInfer(infer_request(6))
        await rows_queued(server.url, 1)
        leaving.cancel()
        await rows_queued(server.url, 0)
        await until(lambda: grpc_requests(server.url, "499") == 1, "the cancelled call counted")
        gate.unlink()
        assert totals(await computing) == [5.0]
        assert (await stub.ModelInfer(infer_request(7))).raw_output_contents  # the server goes on serving
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 2  # the cancelled row never ran


async def test_sigterm_answers_every_accepted_call(start_server, tmp_path, frontends):
    gate = tmp_path / "gate"
    server = start_server(synthetic_repository(tmp_path / "repo", gate), poll_interval=0, frontends=frontends)
    gate.touch()
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        computing = await hold(stub, server.url, 0)
        queued = [stub.ModelInfer(infer_request(i)) for i in range(1, 8)]
        await rows_queued(server.url, 7)
        server.process.send_signal(signal.SIGTERM)
        await until(lambda: server.log().count("Shutting down") == frontends, "every front end shutting down")
        gate.unlink()
        answers = [await call for call in [computing, *queued]]
    assert [totals(a) for a in answers] == [[float(i)] for i in range(8)]
    assert server.process.wait(60) in (0, -signal.SIGTERM)
    assert server.log().count("gRPC stopped: every accepted call answered") == frontends


async def test_metrics_message_size_health_and_reflection(start_server, tmp_path):
    server = start_server(synthetic_repository(tmp_path), poll_interval=0, max_body_bytes=100_000)
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        answers = await asyncio.gather(*(stub.ModelInfer(infer_request(i, rows=2)) for i in range(3)))
        assert [totals(a) for a in answers] == [[float(i)] * 2 for i in range(3)]
        bad = infer_request(1)
        bad.inputs[0].datatype = "FP64"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # 200 KB > max_body_bytes: refused by gRPC itself
            await stub.ModelInfer(infer_request(1, rows=12_500))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", "syn", "syn:1", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"):
            assert (await health.Check(health_pb2.HealthCheckRequest(service=name))).status == serving, name
        assert (await health.Check(health_pb2.HealthCheckRequest(service="syn:4"))).status == \
            health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health.Check(health_pb2.HealthCheckRequest(service="missing"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert grpc_requests(server.url, "200") == 3 and grpc_requests(server.url, "400") == 1
    assert metric(server.url, "batchserve_inferences_total", model="syn") == 6

    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.grpc_target) as sync_channel:
        database = ProtoReflectionDescriptorDatabase(sync_channel)
        assert set(database.get_services()) == {
            "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "inference.GRPCInferenceService",
            "tensorflow.serving.ModelService", "tensorflow.serving.PredictionService"}
        described = DescriptorPool(database)
        infer = described.FindServiceByName("inference.GRPCInferenceService").methods_by_name["ModelInfer"]
        assert "raw_input_contents" in infer.input_type.fields_by_name
        predict = described.FindServiceByName("tensorflow.serving.PredictionService").methods_by_name["Predict"]
        assert predict.output_type.full_name == "tensorflow.serving.PredictResponse"


async def test_bearer_tokens_guard_grpc_calls(start_server, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("tokens:\n"
                      "  - {token: infer-token-0123456789, scopes: [infer, metadata], models: [syn]}\n"
                      "  - {token: metadata-token-0123456789, scopes: [metadata]}\n"
                      "  - {token: metrics-token-0123456789, scopes: [metrics]}\n"
                      "  - {token: reflect-token-0123456789, scopes: [metadata]}\n"
                      "  - {token: second-infer-token-0123456789, scopes: [infer], models: [syn]}\n")
    server = start_server(synthetic_repository(tmp_path / "repo"), poll_interval=0, auth_tokens_file=tokens,
                          auth_rate_limit=1)  # one call a second per token, bursts of one

    def bearer(token: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(infer_request(1))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED and "bearer token" in raised.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ModelInfer(infer_request(1), metadata=bearer("metadata-token-0123456789"))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'infer' scope" in raised.value.details()
        answer = await stub.ModelInfer(infer_request(4), metadata=bearer("infer-token-0123456789"))
        assert totals(answer) == [4.0]
        with pytest.raises(grpc.aio.AioRpcError) as raised:  # at once again: over the token's rate
            await stub.ModelInfer(infer_request(4), metadata=bearer("infer-token-0123456789"))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "auth_rate_limit" in raised.value.details()
        assert dict(raised.value.trailing_metadata())["retry-after"] == "1"
        wrong = infer_request(4)  # its header fails a plan's check: the general path answers, authorized once
        wrong.inputs[0].shape[:] = [1, 3]
        wrong.raw_input_contents[0] = np.zeros((1, 3), np.float32).tobytes()
        for _ in range(2):  # the first call makes the plan, the second matches it
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.ModelInfer(wrong, metadata=bearer("second-infer-token-0123456789"))
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
            await asyncio.sleep(1.1)  # the token's rate refills
        metadata = await stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="syn"),
                                            metadata=bearer("metadata-token-0123456789"))
        assert metadata.name == "syn"
        assert (await stub.ServerLive(service_pb2.ServerLiveRequest())).live  # health stays open
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(server.grpc_target) as sync_channel:  # reflection needs the metadata scope
        reflect = reflection_pb2_grpc.ServerReflectionStub(sync_channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as raised:
            list(reflect.ServerReflectionInfo(iter([ask])))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (answer,) = reflect.ServerReflectionInfo(iter([ask]), metadata=bearer("reflect-token-0123456789"))
        assert "inference.GRPCInferenceService" in {s.name for s in answer.list_services_response.service}
    scrape = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}).text
    samples = [s for family in text_string_to_metric_families(scrape) for s in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    assert total("batchserve_rejected_total", reason="unauthenticated") == 2  # the infer call, the reflection
    assert total("batchserve_rejected_total", reason="forbidden") == 1
    assert total("batchserve_rejected_total", reason="rate_limited") == 1
    assert total("batchserve_requests_total", model="syn", protocol="grpc", code="200") == 1


def test_repository_calls_load_unload_and_index_in_explicit_mode(start_server, tmp_path):
    import json

    import tritonclient.grpc as grpcclient
    import yaml
    from tritonclient.utils import InferenceServerException

    server = start_server(synthetic_repository(tmp_path), poll_interval=0, model_control_mode="explicit")
    client = grpcclient.InferenceServerClient(server.grpc_target)
    try:
        assert not client.is_model_ready("syn")
        assert [(m.name, m.state) for m in client.get_model_repository_index().models] == [("syn", "UNAVAILABLE")]
        config = {**yaml.safe_load((tmp_path / "syn" / "model.yaml").read_text()), "max_batch_size": 2}
        client.load_model("syn", config=json.dumps(config))  # the override replaces model.yaml
        assert client.is_model_ready("syn")
        assert client.get_model_config("syn").config.max_batch_size == 2
        x = grpcclient.InferInput("features", [2, 4], "FP32")
        x.set_data_from_numpy(np.array([[3, 0, 0, 0], [5, 0, 0, 0]], np.float32))
        assert client.infer("syn", [x]).as_numpy("total").tolist() == [[3.0], [5.0]]
        with pytest.raises(InferenceServerException) as raised:
            client.load_model("syn", config="{}", files={"file:1/model.savedmodel": b"x"})
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT" and "is not supported" in raised.value.message()
        client.unload_model("syn")
        assert not client.is_model_ready("syn")
        with pytest.raises(InferenceServerException) as raised:
            client.load_model("../etc")
        assert raised.value.status() == "StatusCode.INVALID_ARGUMENT" and "invalid model name" in raised.value.message()
    finally:
        client.close()
    assert metric(server.url, "batchserve_model_control_total", action="load", outcome="ok") == 1
    assert metric(server.url, "batchserve_model_control_total", action="unload", outcome="ok") == 1
