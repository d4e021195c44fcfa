"""Request lines from a served model: the x-request-id of a logged request comes back over every route (HTTP
in-protocol and ASGI, gRPC metadata), failures are logged once per interval per reason, with sampling
off an answered request gets neither a line nor an id, and a served request's line has its queue wait, its
batch's compute and size, in one process and through the front end's link to the engine."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ..harness import Client, Served, serving, synthetic_model, until
from ..payloads import BAD_SHAPE, INFER, grpc_infer_request, row_body

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
async def served(repository: Path) -> AsyncIterator[Served]:
    async with serving(repository, grpc=True, access_log_sample=1.0, error_log_interval_s=3600) as server:
        yield server


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[dict[str, Any]]]:
    """The request lines logged so far: their fields, and their level."""
    caplog.set_level(logging.INFO, logger="batchserve.access")
    return lambda: [{**r.fields, "level": r.levelname} for r in caplog.records if r.name == "batchserve.access"]


async def test_a_sampled_request_answers_with_the_callers_id_and_logs_it(http: Client, lines: Lines) -> None:
    answer = await http.post(INFER, row_body(2.0), {"X-Request-Id": "caller-7"})
    assert answer.status == 200 and answer.headers["x-request-id"] == "caller-7"
    [line] = lines()
    assert {k: line[k] for k in ("request_id", "model", "version", "signature", "protocol", "status", "level")} == {
        "request_id": "caller-7", "model": "syn", "version": "1", "signature": "serving_default",
        "protocol": "v2", "status": 200, "level": "INFO"}
    assert line["total_ms"] > 0 and "reason" not in line and "error" not in line


async def test_without_a_callers_id_one_is_made_and_returned(http: Client, lines: Lines) -> None:
    answer = await http.post("/v1/models/syn:predict", {"instances": [[1, 2, 3, 4]]})
    assert answer.status == 200 and re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
    [line] = lines()
    assert (line["request_id"], line["protocol"]) == (answer.headers["x-request-id"], "tfserving")


async def test_failures_are_logged_once_per_interval_per_status_and_reason(http: Client, lines: Lines) -> None:
    first = await http.post(INFER, BAD_SHAPE, {"x-request-id": "bad-1"})
    second = await http.post(INFER, BAD_SHAPE, {"x-request-id": "bad-2"})
    unknown = await http.post("/v2/models/nope/infer", row_body(1))
    assert (first.status, second.status, unknown.status) == (400, 400, 404)
    assert first.headers["x-request-id"] == "bad-1" and "x-request-id" not in second.headers  # held back: no line
    assert "x-request-id" in unknown.headers
    bad, missing = lines()
    assert (bad["request_id"], bad["status"], bad["reason"], bad["suppressed"], bad["level"]) == (
        "bad-1", 400, "invalid", 0, "INFO")
    assert bad["error"] == "input 'features' expects shape [-1, 4], got [1, 3] (dimension 1 must be 4)"
    assert (missing["model"], missing["status"], missing["reason"]) == ("nope", 404, "invalid")
    assert "version" not in missing


async def test_a_503_is_a_warning(http: Client, lines: Lines) -> None:
    assert (await http.post("/v2/models/broken/infer", row_body(1))).status == 503
    [line] = lines()
    assert (line["status"], line["reason"], line["level"]) == (503, "not_ready", "WARNING")


async def test_grpc_metadata_carries_the_id_both_ways(stub: Any, lines: Lines) -> None:
    call = stub.ModelInfer(grpc_infer_request(1.0), metadata=(("x-request-id", "grpc-1"),), timeout=10)
    await call
    assert dict(await call.trailing_metadata())["x-request-id"] == "grpc-1"
    [line] = lines()
    assert (line["request_id"], line["protocol"], line["status"]) == ("grpc-1", "grpc", 200)


async def test_sampling_off_answers_without_a_line_or_an_id(repository: Path, lines: Lines) -> None:
    async with serving(repository) as server:
        answer = await server.client("socket").post(INFER, row_body(1.0), {"x-request-id": "quiet"})
        assert answer.status == 200 and "x-request-id" not in answer.headers
        failed = await server.client("socket").post(INFER, BAD_SHAPE, {"x-request-id": "loud"})
        assert failed.headers["x-request-id"] == "loud"  # errors are logged whatever the sample
    assert [line["request_id"] for line in lines()] == ["loud"]


async def test_an_overload_refusal_is_logged_once_per_interval(tmp_path: Path, lines: Lines) -> None:
    root = tmp_path / "slo"
    synthetic_model(root, "syn", scheduling="slo", slo_ms=100)
    async with serving(root, overload_share=0.5, error_log_interval_s=3600) as server:
        server.app.state.loop_lag.behind = lambda hold=0.0: 0.2  # more than overload_share of the 100 ms budget
        http = server.client("socket")
        first = await http.post(INFER, row_body(1.0), {"x-request-id": "over-1"})
        second = await http.post(INFER, row_body(1.0))
    assert (first.status, second.status) == (503, 503)
    assert "x-request-id" not in first.headers  # a refusal's answer is made once per cause
    [line] = lines()
    assert {k: line.get(k) for k in ("request_id", "model", "version", "status", "reason", "suppressed",
                                     "level")} == {"request_id": "over-1", "model": "syn", "version": "1",
                                                   "status": 503, "reason": "overloaded", "suppressed": 0,
                                                   "level": "WARNING"}


@pytest.mark.parametrize("frontends", [False, True], ids=["one-process", "front-end-and-engine"])
async def test_a_line_has_its_queue_wait_and_its_batchs_compute_and_size(tmp_path: Path, lines: Lines,
                                                                          frontends: bool) -> None:
    gate = tmp_path / "gate"
    root = synthetic_model(tmp_path / "repo", "timed", synthetic={"base_ms": 20.0, "gate_path": str(gate)},
                           instances_per_device=1)
    path = "/v2/models/timed/infer"
    async with serving(root, frontends=frontends, access_log_sample=1.0) as served:
        gate.touch()  # the first batch waits at the gate, holding the one worker: the next two queue behind it
        first = asyncio.ensure_future(served.client("socket").post(path, row_body(1.0), {"x-request-id": "first"}))
        await until(lambda: Path(f"{gate}.held").exists(), "the first batch held at the gate")
        batcher = served._version("timed", None).batcher  # the engine's, with front ends
        pair = [asyncio.ensure_future(served.client("socket").post(path, row_body(2.0), {"x-request-id": f"pair-{i}"}))
                for i in range(2)]
        await until(lambda: batcher.queued_rows == 2, "two requests queued behind the held batch")
        gate.unlink()
        answers = await asyncio.gather(first, *pair)
    assert [answer.status for answer in answers] == [200, 200, 200]
    by_id = {line["request_id"]: line for line in lines()}
    assert sorted(by_id) == ["first", "pair-0", "pair-1"]
    assert by_id["first"]["batch_size"] == 1 and by_id["pair-0"]["batch_size"] == by_id["pair-1"]["batch_size"] == 2
    for line in by_id.values():
        assert 20.0 <= line["compute_ms"] <= line["total_ms"] and 0 <= line["queue_ms"] <= line["total_ms"]
    for name in ("pair-0", "pair-1"):  # they waited while the first batch was held
        assert 0 < by_id[name]["queue_ms"] and by_id[name]["queue_ms"] + by_id[name]["compute_ms"] <= \
            by_id[name]["total_ms"]
