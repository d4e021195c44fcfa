"""413, 503 + Retry-After, 504, and graceful shutdown under load, on servers started for each test."""

from __future__ import annotations

import asyncio
import signal

import httpx
import numpy as np
import pytest

from load_tests.payloads import encode
from server.client import AsyncClient, DeadlineExceededError


def test_body_over_the_limit_is_413_before_parsing(start_server, demo_repository):
    server = start_server(demo_repository, max_body_bytes=100_000, poll_interval=0)
    response = httpx.post(f"{server.url}/v2/models/scale/infer", content=b"x" * 200_000)
    assert response.status_code == 413
    assert "exceeds the limit of 100000 bytes" in response.json()["error"]


async def test_full_queue_is_503_with_retry_after_and_deadline_is_504(start_server, demo_repository):
    server = start_server(demo_repository, max_queue_size=32, poll_interval=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        flood = encode("image_classifier", "v2_binary", rows=4)  # binary: they arrive faster than the model runs
        headers = {"Content-Type": flood.content_type, **flood.headers}
        responses = await asyncio.gather(*(http.post(flood.path, content=flood.body, headers=headers)
                                           for _ in range(48)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0
        rejected = next(r for r in responses if r.status_code == 503)
        assert rejected.headers["retry-after"] == "1"
        assert "queue full" in rejected.json()["error"]

        # A request with a 1 ms deadline, queued behind a computing 32-image batch, expires without running.
        async with AsyncClient(server.url, retries=0) as client:
            images = np.zeros((32, 96, 96, 3), np.float32)
            busy = asyncio.ensure_future(client.predict("image_classifier", {"image": images}))
            await asyncio.sleep(0.005)
            with pytest.raises(DeadlineExceededError, match="deadline"):
                await client.predict("image_classifier", {"image": images[:1]}, timeout=0.001)
            assert (await busy)["probabilities"].shape == (32, 10)
        metrics = (await http.get("/metrics")).text
    assert 'batchserve_rejected_total{model="image_classifier",reason="queue_full",version="1"}' in metrics
    assert 'batchserve_rejected_total{model="image_classifier",reason="deadline",version="1"}' in metrics


async def test_sigterm_under_load_answers_every_accepted_request(start_server, demo_repository):
    server = start_server(demo_repository, poll_interval=0)
    images = np.random.default_rng(6).random((8, 96, 96, 3), dtype=np.float32)
    async with AsyncClient(server.url, retries=0, timeout=120) as client:
        requests = [asyncio.ensure_future(client.predict("image_classifier", {"image": images})) for _ in range(48)]
        await asyncio.sleep(0.5)  # every request is on the wire and queued or computing
        server.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*requests, return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(r["probabilities"].shape == (8, 10) for r in results)
    assert server.process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert "every accepted request answered" in server.log()
