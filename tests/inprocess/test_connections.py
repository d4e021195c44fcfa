"""The in-protocol HTTP server on a socket: keep-alive, pipelining, bodies in pieces, Connection: close,
header limits, bytes in flight, and a client that leaves while its request is queued."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from ..harness import Connection, Response, Served, request_bytes, serving, syn_rule, until
from ..payloads import INFER, row_body


def _total(answer_json: dict) -> list[float]:
    return answer_json["outputs"][0]["data"]  # type: ignore[no-any-return]


async def test_one_keep_alive_connection_carries_answers_and_errors(served: Served) -> None:
    connection = await served.connect()
    assert _total((await connection.request("POST", INFER, row_body(1))).json()) == [1.0]
    assert (await connection.request("POST", INFER, b"{")).status == 400
    assert (await connection.request("POST", "/v2/models/nope/infer", row_body(1))).status == 404
    assert (await connection.request("GET", "/v2/health/live")).status == 200
    assert (await connection.request("POST", "/v2/models/broken/infer", row_body(1))).status == 503
    predicted = await connection.request("POST", "/v1/models/syn:predict", {"instances": [[2, 0, 0, 0]]})
    assert predicted.json() == {"predictions": [[2.0]]}
    answer = await connection.request("POST", INFER, row_body(3))
    assert _total(answer.json()) == [3.0] and "connection" not in answer.headers
    assert not connection.reader.at_eof()


async def test_pipelined_requests_are_answered_in_order(served: Served) -> None:
    connection = await served.connect()
    await connection.send(b"".join([
        request_bytes("POST", INFER, row_body(1)),
        request_bytes("GET", "/v2/models/syn/ready"),
        request_bytes("POST", "/v1/models/syn:predict", {"instances": [[2, 0, 0, 0]]}),
        request_bytes("POST", INFER, b"{"),
        request_bytes("POST", INFER, row_body(3, rows=2)),
    ]))
    answers = [await connection.response() for _ in range(5)]
    assert [a.status for a in answers] == [200, 200, 200, 400, 200]
    assert _total(answers[0].json()) == [1.0]
    assert answers[1].json() == {"name": "syn", "ready": True}
    assert answers[2].json() == {"predictions": [[2.0]]}
    assert _total(answers[4].json()) == [3.0, 3.0]


async def test_pipelined_requests_wait_for_their_batches_in_order(served: Served) -> None:
    puppet = await served.puppet("syn")
    connection = await served.connect()
    await connection.send(request_bytes("POST", INFER, row_body(1)) + request_bytes("POST", INFER, row_body(2)))


    async def both() -> tuple[Response, Response]:
        return await connection.response(), await connection.response()

    answers = asyncio.ensure_future(both())
    await puppet.answer(syn_rule)
    await puppet.answer(syn_rule)
    first, second = await answers
    assert (_total(first.json()), _total(second.json())) == ([1.0], [2.0])
    assert [entry.inputs["features"][0, 0] for entry in puppet.received] == [1.0, 2.0]


async def test_a_body_arriving_in_pieces(served: Served) -> None:
    connection = await served.connect()
    data = request_bytes("POST", INFER, row_body(5))
    head_end = data.index(b"\r\n\r\n") + 4
    for piece in (data[:10], data[10:head_end], data[head_end:head_end + 7], data[head_end + 7:]):
        await connection.send(piece)
    assert _total((await connection.response()).json()) == [5.0]


async def test_connection_close_is_answered_then_closed(served: Served) -> None:
    connection = await served.connect()
    answer = await connection.request("POST", INFER, row_body(1), keep_alive=False)
    assert answer.status == 200 and answer.headers["connection"] == "close"
    assert await connection.closed_by_server()


async def test_a_chunked_body_takes_the_asgi_path_and_is_answered(served: Served) -> None:
    connection = await served.connect()
    answer = await connection.request("POST", INFER, row_body(6), chunked=True)
    assert _total(answer.json()) == [6.0]
    assert _total((await connection.request("POST", INFER, row_body(7))).json()) == [7.0]  # still usable


async def test_a_client_that_leaves_cancels_its_queued_request(served: Served) -> None:
    puppet = await served.puppet("syn")
    leaving = await served.connect()
    await leaving.send(request_bytes("POST", INFER, row_body(1)))
    [request] = await puppet.submitted(1)
    leaving.close()
    await asyncio.wait_for(request.cancelled.wait(), 10)
    assert puppet.pending == []
    assert await served.requests_by_code(model="syn") == {"499": 1}
    staying = await served.connect()
    answer = asyncio.ensure_future(staying.request("POST", INFER, row_body(2)))
    await puppet.answer(syn_rule)
    assert _total((await answer).json()) == [2.0]
    assert await served.requests_by_code(model="syn") == {"499": 1, "200": 1}


async def test_too_many_headers_is_431_and_the_connection_closes(repository: Path) -> None:
    async with serving(repository, max_header_count=20) as served:
        connection = await served.connect()
        headers = {f"X-Extra-{i}": "1" for i in range(30)}
        answer = await connection.request("POST", INFER, row_body(1), headers)
        assert answer.status == 431
        assert answer.json() == {"error": "request headers exceed the limits: at most 20 headers and 16384 bytes "
                                          "of request line and headers"}
        assert await connection.closed_by_server()


async def test_bytes_in_flight_over_the_limit_are_503_and_the_connection_stays_usable(repository: Path) -> None:
    async with serving(repository, max_inflight_bytes=1500) as served:
        puppet = await served.puppet("syn")
        holding = await served.connect()
        held = asyncio.ensure_future(holding.request("POST", INFER, row_body(1)))
        await puppet.submitted(1)  # its body is counted in flight until it is answered
        refused: Connection = await served.connect()
        large = row_body(2.5, rows=100)  # about 1.6 kB: over the limit while the first request's body is held
        answer = await refused.request("POST", INFER, large)
        assert answer.status == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["error"].startswith("this front end holds 0 MiB of request bodies "
                                                 "(max_inflight_bytes=1500)")
        assert await served.metric("batchserve_rejected_total", reason="inflight_full") == 1
        await puppet.answer(syn_rule)
        assert (await held).status == 200
        again = asyncio.ensure_future(refused.request("POST", INFER, large))  # alone in flight: admitted
        await puppet.answer(syn_rule)
        assert _total((await again).json()) == [2.5] * 100


async def test_answered_and_abandoned_requests_leave_nothing_for_the_garbage_collector(served: Served) -> None:
    """A request's objects (its cycle on the connection, its InferRequest, its place in the batcher) go with
    their last reference: each one left in a reference cycle would be found by a collection of the garbage
    collector instead, whose cost grows with every object alive (the profile showed it at 7 % of the CPU)."""
    from batching.request import Delivery, Request
    from server.core.request import InferRequest
    from server.core.service import _Queued
    from server.http.protocol import _Cycle

    ours = (_Cycle, _Queued, Delivery, Request, InferRequest)
    connection = await served.connect()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds unreachable is kept in gc.garbage, to be read
    try:
        for value in range(5):
            assert _total((await connection.request("POST", INFER, row_body(value))).json()) == [float(value)]
        assert (await connection.request("POST", INFER, b"{")).status == 400
        held, batcher = await served.hold("syn")
        computing = asyncio.ensure_future(connection.request("POST", INFER, row_body(7)))
        [batch] = await held.held(1)
        leaving = await served.connect()
        await leaving.send(request_bytes("POST", INFER, row_body(8)))
        await until(lambda: batcher.queued_rows == 1, "its row queued behind the held batch")
        leaving.close()
        await until(lambda: batcher.queued_rows == 0, "its row off the queue")
        batch.release()
        assert _total((await computing).json()) == [7.0]
        assert await served.requests_by_code(model="syn") == {"200": 6, "400": 1, "499": 1}
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage if isinstance(o, ours)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_a_connection_answered_in_place_is_closed_once_idle_for_the_keep_alive(tmp_path: Path) -> None:
    """Its keep-alive check is armed once per idle period, not once per answer: a connection whose requests keep
    coming stays open past the timeout, and one left idle is closed after it, as uvicorn closes its own."""
    from ..harness import synthetic_model

    async with serving(synthetic_model(tmp_path / "repo", "syn"), keep_alive_s=0.5) as served:
        busy, idle = await served.connect(), await served.connect()
        loop = asyncio.get_running_loop()
        assert _total((await idle.request("POST", INFER, row_body(1))).json()) == [1.0]
        answered = loop.time()
        started = loop.time()
        sent = 0
        while loop.time() - started < 1.2:  # more than two timeouts' worth of requests, one after another
            sent += 1
            assert _total((await busy.request("POST", INFER, row_body(sent))).json()) == [float(sent)]
        assert await idle.closed_by_server(timeout=5)
        assert loop.time() - answered >= 0.45  # not at once: after its idle timeout (read from a moment later)
        assert not busy.reader.at_eof()
        assert _total((await busy.request("POST", INFER, row_body(7))).json()) == [7.0]
        assert await busy.closed_by_server(timeout=5)  # idle from here on
