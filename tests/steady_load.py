"""Steady concurrent load on the synthetic model ``syn``, every answer checked against the row it was for."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from .payloads import INFER, row_body


class SteadyLoad:
    """``clients`` closed-loop clients, each sending one-row requests with values of its own, until stopped.

    Outcomes are counted by kind: ``ok`` (200 with the request's own value back), ``wrong`` (200 with
    another value), ``status <code>``, or the name of a transport error. ``ok`` is read while running,
    so a test can wait for progress instead of sleeping.
    """

    def __init__(self, url: str, clients: int = 8, path: str = INFER,
                 body: Callable[[float], dict[str, Any]] = row_body,
                 expect: Callable[[float], list[float]] = lambda value: [value]) -> None:
        self.url = url
        self.clients = clients
        self.path = path
        self.body = body
        self.expect = expect
        self.outcomes: Counter[str] = Counter()
        self.failures: list[tuple[float, str, float]] = []  # value, outcome, time.monotonic() when sent
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]

    async def __aenter__(self) -> SteadyLoad:
        self._http = httpx.AsyncClient(base_url=self.url, timeout=120,
                                       limits=httpx.Limits(max_connections=self.clients))
        self._tasks = [asyncio.ensure_future(self._client(i)) for i in range(self.clients)]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    async def stop(self) -> Counter[str]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        return self.outcomes

    async def _client(self, index: int) -> None:
        assert self._http is not None
        sent = 0
        while not self._stop.is_set():
            value = float((index + 1) * 100_000 + sent)  # exact in FP32; never a fault value of the tests (< 100)
            sent += 1
            sent_at = time.monotonic()
            outcome = await self._one(value)
            self.outcomes[outcome] += 1
            if outcome != "ok":
                self.failures.append((value, outcome, sent_at))

    async def _one(self, value: float) -> str:
        assert self._http is not None
        try:
            response = await self._http.post(self.path, json=self.body(value))
        except httpx.HTTPError as error:
            return type(error).__name__
        if response.status_code != 200:
            return f"status {response.status_code}"
        return "ok" if response.json()["outputs"][0]["data"] == self.expect(value) else "wrong"
