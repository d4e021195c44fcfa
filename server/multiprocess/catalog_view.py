"""What a front-end process sees of the engine's models: the catalog it announces, and each version's batchers,
whose requests go to the engine (server/multiprocess/remote.py's ``EngineClient``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from server.models.catalog import ModelCatalog, ModelNotReady, ModelVersion
from server.multiprocess.messages import Call, Catalog, Index, Load, Sync, Unload
from server.observability.trace_context import Measured
from server.settings import Settings


class EngineClient(Protocol):
    """What the catalog and its batchers call on the front end's client of the engine (remote.py's)."""

    async def submit(self, model: str, version: int, inputs: Mapping[str, np.ndarray], deadline: float | None,
                     priority: int, signature: str = "", trace: Measured | None = None) -> dict[str, np.ndarray]: ...

    async def call(self, request: type[Call], *args: Any) -> Any: ...


class RemoteBatcher:
    """A version's batcher as seen from a front end: ``submit`` has the Batcher's signature."""

    def __init__(self, engine: EngineClient, name: str, version: int, signature: str = "") -> None:
        self._engine, self._name, self._version, self._signature = engine, name, version, signature

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: int = 0,
                     timeout: float | None = None, trace: Measured | None = None) -> dict[str, np.ndarray]:
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout  # the engine's batcher clock reads time.monotonic() too
        return await self._engine.submit(self._name, self._version, inputs, deadline, priority, self._signature,
                                         trace)

    async def close(self, drain: bool = True) -> None:
        """The engine drains its own queues."""


class RemoteCatalog(ModelCatalog):
    """The engine's catalog, replaced whole on each announcement; empty while the engine is away."""

    def __init__(self, engine: EngineClient, settings: Settings) -> None:
        super().__init__()
        self._engine = engine
        self._settings = settings
        self.connected = False  # the engine's catalog is here and current
        self.restarting = False  # the engine stopped: its last catalog routes requests to the hold meanwhile

    def update(self, catalog: Catalog) -> None:
        self.connected = catalog.scanned
        self.restarting = False
        models: dict[str, dict[int, ModelVersion]] = {}
        for v in catalog.versions:
            mv = ModelVersion(v.name, v.version, v.path, v.stamp, v.state, v.error, v.config,
                              description=v.description)
            if v.description is not None:
                mv.batch_config = v.config.batch_config(self._settings, v.description.instances,
                                                        v.description.batch_sizes)
                mv.batcher = RemoteBatcher(self._engine, v.name, v.version)
                mv.batchers = {name: RemoteBatcher(self._engine, v.name, v.version, name)
                               for name in v.description.signatures}
                mv.batchers[v.description.signature.name] = mv.batcher
            models.setdefault(v.name, {})[v.version] = mv
        self._models = models
        self._configs = {name: config for name, config in catalog.configs.items() if config is not None}
        self._config_errors = dict(catalog.config_errors)
        self.empty_is_ready = catalog.empty_is_ready
        self.strict_readiness = catalog.strict_readiness

    def clear(self) -> None:
        self.update(Catalog(False, [], {}, {}, False))

    def engine_stopped(self) -> None:
        """The engine went away: not ready, but its last catalog still routes requests (they wait for the next)."""
        self.connected = False
        self.restarting = True

    @property
    def ready(self) -> bool:
        return self.connected and super().ready

    def _check_connected(self) -> None:
        if not self.connected and not self.restarting:
            raise ModelNotReady("the model engine is starting or restarting; retry shortly")

    def get(self, name: str, version: int | str | None = None, label: str | None = None) -> ModelVersion:
        self._check_connected()
        return super().get(name, version, label)

    def versions(self, name: str) -> list[ModelVersion]:
        self._check_connected()
        return super().versions(name)

    async def sync(self) -> None:
        await self._engine.call(Sync)

    async def index(self, ready_only: bool = False) -> list[dict[str, object]]:
        return await self._engine.call(Index, ready_only)  # type: ignore[no-any-return]

    async def load_model(self, name: str, config: dict[str, object] | None = None) -> None:
        await self._engine.call(Load, name, config)

    async def unload_model(self, name: str) -> None:
        await self._engine.call(Unload, name)
