"""The model repository: which versions on disk are served, and their life cycle.

TF Serving's layout (ROOT/NAME/VERSION/saved_model.pb) and states
(START, LOADING, AVAILABLE, UNLOADING, END). A scan loads and warms new
versions before retiring removed ones, and a retired version drains its queue
first, so no request fails during a version switch.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from batching import BatchConfig, Batcher, BatchObserver
from server.core.vocabulary import Signature
from server.models.config import ModelConfig, ModelConfigError, VersionPolicy, load_model_config
from server.models.warmup_costs import seed_cost_model
from server.runtime import WorkerPool, create_pool
from server.settings import Settings

log = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    START = "START"
    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    UNLOADING = "UNLOADING"
    END = "END"


class ModelNotFound(LookupError):
    """No such model, version or label (HTTP 404)."""


class ModelNotReady(RuntimeError):
    """The model exists but no version can serve now (HTTP 503)."""


class BatchQueue(Protocol):
    """What a version's requests are submitted to: its Batcher, or (in a front-end process) the engine's."""

    async def submit(self, inputs: Mapping[str, np.ndarray], deadline: float | None = None, priority: int = 0,
                     timeout: float | None = None) -> dict[str, np.ndarray]: ...

    async def close(self, drain: bool = True) -> None: ...


@dataclass(frozen=True)
class VersionDescription:
    """What a loaded version tells clients about itself; kept after it is retired."""

    signature: Signature
    backend: str
    device: str
    instances: int
    batch_sizes: tuple[int, ...] | None = None


@dataclass(eq=False)
class ModelVersion:
    name: str
    version: int
    path: Path
    stamp: float
    state: ModelState = ModelState.START
    error: str | None = None
    config: ModelConfig = field(default_factory=ModelConfig)
    pool: WorkerPool | None = None
    description: VersionDescription | None = None
    batcher: BatchQueue | None = None
    batch_config: BatchConfig | None = None
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0

    @property
    def signature(self) -> Signature:
        assert self.description is not None, "signature of a version that is not loaded"
        return self.description.signature

    @property
    def backend(self) -> str:
        return self.description.backend if self.description is not None else "tensorflow"

    @property
    def device(self) -> str:
        return self.description.device if self.description is not None else ""

    @property
    def ready(self) -> bool:
        return self.state is ModelState.AVAILABLE


ObserverFactory = Callable[[ModelVersion], BatchObserver]
StateListener = Callable[[ModelVersion], None]


def _version_stamp(path: Path) -> float:
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if (path / name).exists():
            return (path / name).stat().st_mtime
    return -1.0


def scan_versions(model_dir: Path, synthetic: bool = False) -> dict[int, Path]:
    """Numeric subfolders holding a SavedModel (any numeric subfolder for a synthetic model)."""
    found = {}
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and (synthetic or _version_stamp(child) >= 0):
            found[int(child.name)] = child
    return found


class ModelCatalog:
    """The served versions and their lookups (hot path: no awaits, no I/O).

    The repository fills it by loading from disk; a front-end process fills it
    from the engine's announcements.
    """

    def __init__(self) -> None:
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._configs: dict[str, ModelConfig] = {}
        self._config_errors: dict[str, str] = {}
        self.empty_is_ready = False  # explicit model control: ready before any model is loaded, as Triton

    # ---- lookups (hot path: no awaits, no I/O) ---------------------------------------

    def names(self) -> list[str]:
        return sorted(set(self._models) | set(self._config_errors))

    def versions(self, name: str) -> list[ModelVersion]:
        if name not in self._models and name not in self._config_errors:
            raise ModelNotFound(f"model {name!r} is not in the repository; models: {self.names()}")
        return sorted(self._models.get(name, {}).values(), key=lambda mv: mv.version)

    def config_error(self, name: str) -> str | None:
        return self._config_errors.get(name)

    def config_of(self, name: str) -> ModelConfig | None:
        return self._configs.get(name)

    def version(self, name: str, number: int) -> ModelVersion | None:
        """Exactly that version, in whatever state, or None."""
        return self._models.get(name, {}).get(number)

    def get(self, name: str, version: int | str | None = None, label: str | None = None) -> ModelVersion:
        """The version to serve: the one asked for, the label's, or the latest available."""
        versions = self._models.get(name)
        if versions is None:
            if name in self._config_errors:
                raise ModelNotReady(f"model {name!r} failed to load: {self._config_errors[name]}")
            raise ModelNotFound(f"model {name!r} is not in the repository; models: {self.names()}")
        if label is not None:
            labels = self._configs.get(name, ModelConfig()).version_labels
            if label not in labels:
                raise ModelNotFound(f"model {name!r} has no version label {label!r}; labels: {sorted(labels)}")
            version = labels[label]
        if version is not None:
            try:
                number = int(version)
            except (TypeError, ValueError):
                raise ModelNotFound(f"version {version!r} of model {name!r} is not a number") from None
            mv = versions.get(number)
            if mv is None:
                raise ModelNotFound(f"model {name!r} has no version {number}; versions: {sorted(versions)}")
            if not mv.ready:
                detail = f": {mv.error}" if mv.error else ""
                raise ModelNotReady(f"version {number} of model {name!r} is {mv.state.value}{detail}")
            return mv
        ready = [mv for mv in versions.values() if mv.ready]
        if not ready:
            states = {v: mv.state.value for v, mv in versions.items()}
            errors = [mv.error for mv in versions.values() if mv.error]
            raise ModelNotReady(
                f"model {name!r} has no available version (states: {states})" + (f": {errors[0]}" if errors else "")
            )
        return max(ready, key=lambda mv: mv.version)

    @property
    def ready(self) -> bool:
        """Every model has a version available and no model.yaml is broken (strict, as Triton's readiness)."""
        return (bool(self._models) or self.empty_is_ready) and not self._config_errors and all(
            any(mv.ready for mv in versions.values()) for versions in self._models.values()
        )

    async def sync(self) -> None:
        """Bring the catalog up to date with the repository on disk."""
        raise NotImplementedError

    # ---- the repository API (server/models/control.py; relayed to the engine by a front end) ----

    async def index(self, ready_only: bool = False) -> list[dict[str, object]]:
        """Every model in the repository and the state of each version (Triton's repository index)."""
        raise NotImplementedError

    async def load_model(self, name: str, config: dict[str, object] | None = None) -> None:
        """Load (or load again, with changed settings) one model; ``config`` overrides its model.yaml."""
        raise NotImplementedError

    async def unload_model(self, name: str) -> None:
        """Drain and unload every version of one model."""
        raise NotImplementedError


class ModelRepository(ModelCatalog):
    """Loads, serves and retires model versions found under ``settings.model_repository``."""

    def __init__(self, settings: Settings, make_observer: ObserverFactory | None = None,
                 on_state: StateListener | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.root = Path(settings.model_repository)
        self._make_observer = make_observer
        self._on_state = on_state or (lambda mv: None)
        self._lock = asyncio.Lock()
        self._default_policy = VersionPolicy.parse(settings.version_policy)
        self._failed_configs: dict[str, ModelConfig] = {}  # changed settings that failed to load: not retried

    # ---- reconciliation -------------------------------------------------------------

    async def sync(self) -> None:
        """Scan the repository once: load what is new, retire what is gone."""
        async with self._lock:
            on_disk = self._on_disk()
            await asyncio.gather(*(self._sync_model(name, path) for name, path in on_disk.items()))
            for name in set(self._models) - set(on_disk):
                await self._retire_all(name)
            for name in set(self._config_errors) - set(on_disk):
                del self._config_errors[name]

    def _on_disk(self) -> dict[str, Path]:
        """The model folders to serve: every one in the repository (model control narrows this)."""
        return {p.name: p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
            if self.root.is_dir() else {}

    def _model_config(self, name: str, model_dir: Path) -> ModelConfig:
        """The model's settings: its model.yaml (the repository API may override it)."""
        return load_model_config(model_dir)

    async def _sync_model(self, name: str, model_dir: Path) -> None:
        try:
            config = self._model_config(name, model_dir)
            self._config_errors.pop(name, None)
        except ModelConfigError as exc:
            if name not in self._config_errors:
                log.error("model %s not (re)loaded: %s", name, exc)
            self._config_errors[name] = str(exc)
            if name in self._models:
                return  # keep serving what is loaded with its last good configuration
            return
        current = self._models.setdefault(name, {})
        on_disk = scan_versions(model_dir, synthetic=config.backend == "synthetic")
        policy = config.version_policy or self._default_policy
        wanted = policy.select(list(on_disk))
        previous = self._configs.get(name)
        if previous is not None and config == self._failed_configs.get(name):
            config = previous  # changed settings that failed to load: serve on with the last good ones
        changed = previous is not None and config != previous
        self._configs[name] = config
        to_load, renewed = [], []
        for number in sorted(wanted):
            existing = current.get(number)
            stamp = _version_stamp(on_disk[number])
            if existing is None or (existing.state is ModelState.END and existing.stamp != stamp):
                mv = ModelVersion(name, number, on_disk[number], stamp, config=config)
                current[number] = mv
                to_load.append(mv)
            elif changed and existing.state is not ModelState.END:  # new settings: load beside it, then switch
                renewed.append(ModelVersion(name, number, on_disk[number], stamp, config=config))
        await asyncio.gather(*(self._load(mv) for mv in to_load + renewed))
        if renewed:
            await self._switch(name, current, renewed, previous)
        # Availability first: old versions go only once a wanted one serves (or nothing is wanted).
        keep_old = bool(wanted) and not any(current[n].ready for n in wanted if n in current)
        for number, mv in list(current.items()):
            if number not in wanted and not (keep_old and mv.ready):
                await self._retire(mv)

    async def _load(self, mv: ModelVersion) -> None:
        self._set_state(mv, ModelState.LOADING)
        started = time.perf_counter()
        try:
            mv.pool = create_pool(mv.config.model_spec(mv.path, self.settings), mv.config.worker_spec(self.settings))
            await mv.pool.start()
            mv.description = VersionDescription(mv.pool.signature, mv.pool.backend, mv.pool.device,
                                                mv.pool.instances, mv.pool.batch_sizes)
            mv.load_seconds = time.perf_counter() - started
            mv.batch_config = mv.config.batch_config(self.settings, mv.pool.instances, mv.pool.batch_sizes)
            if self.settings.warmup:
                await self._warm_up(mv)
            observer = self._make_observer(mv) if self._make_observer else None
            mv.batcher = Batcher(mv.pool.run, mv.batch_config, observer=observer, name=f"{mv.name}:{mv.version}")
            if self.settings.warmup and isinstance(mv.batcher, Batcher):  # SLO scheduling starts from timings
                await seed_cost_model(mv.batcher, mv.pool,
                                      mv.config.warmup_plan(self.settings, mv.pool.instances, mv.pool.batch_sizes))
        except Exception as exc:
            mv.error = str(exc) or type(exc).__name__
            log.error("model %s version %d failed to load: %s", mv.name, mv.version, mv.error)
            if mv.pool is not None:
                await mv.pool.close()
                mv.pool = None
            self._set_state(mv, ModelState.END)
            return
        log.info("model %s version %d AVAILABLE (backend %s on %s): loaded in %.2fs, warmed up in %.2fs",
                 mv.name, mv.version, mv.backend, mv.device, mv.load_seconds, mv.warmup_seconds)
        self._set_state(mv, ModelState.AVAILABLE)

    async def _warm_up(self, mv: ModelVersion) -> None:
        """Run every batch size the batcher will send, so tracing happens before traffic."""
        assert mv.pool is not None and mv.batch_config is not None
        started = time.perf_counter()
        await mv.pool.warm_up(mv.config.warmup_plan(self.settings, mv.pool.instances, mv.pool.batch_sizes))
        mv.warmup_seconds = time.perf_counter() - started

    async def _switch(self, name: str, current: dict[int, ModelVersion], renewed: list[ModelVersion],
                      previous: ModelConfig | None) -> None:
        """Served versions loaded and warmed again with changed settings: each replaces its old one, which
        drains. If any failed to load, none switches: the old ones serve on with their settings."""
        if any(not mv.ready for mv in renewed):
            self._failed_configs[name] = renewed[0].config
            if previous is not None:
                self._configs[name] = previous
            log.error("model %s keeps its previous settings: the changed ones failed to load", name)
            for mv in renewed:
                await self._drain_replaced(mv)
            for mv in current.values():
                if mv.ready:
                    self._set_state(mv, mv.state)  # its series, as the failed load left them, restored
            return
        self._failed_configs.pop(name, None)
        for mv in renewed:
            old, current[mv.version] = current.get(mv.version), mv
            if old is not None:
                await self._drain_replaced(old)
            self._set_state(mv, mv.state)  # announced in the catalog; its series (shared with the old) kept
            log.info("model %s version %d switched to its changed settings", name, mv.version)

    async def _drain_replaced(self, mv: ModelVersion) -> None:
        """Retire a version whose successor (same name and version) serves: no state notices, which
        would remove the metric series the two share."""
        if mv.batcher is not None:
            mv.state = ModelState.UNLOADING
            await mv.batcher.close(drain=True)
        if mv.pool is not None:
            await mv.pool.close()
        mv.state = ModelState.END

    async def _retire(self, mv: ModelVersion) -> None:
        if mv.state is ModelState.AVAILABLE:
            self._set_state(mv, ModelState.UNLOADING)
            assert mv.batcher is not None and mv.pool is not None
            await mv.batcher.close(drain=True)
            await mv.pool.close()
            log.info("model %s version %d unloaded", mv.name, mv.version)
        self._set_state(mv, ModelState.END)
        if self._models.get(mv.name, {}).get(mv.version) is mv:
            self._models[mv.name].pop(mv.version)

    async def _retire_all(self, name: str) -> None:
        for mv in list(self._models.get(name, {}).values()):
            await self._retire(mv)
        self._models.pop(name, None)
        self._configs.pop(name, None)

    def _set_state(self, mv: ModelVersion, state: ModelState) -> None:
        mv.state = state
        self._on_state(mv)

    async def poll(self) -> None:
        """Rescan every ``poll_interval`` seconds until cancelled."""
        interval = self.settings.poll_interval
        while interval > 0:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:  # a scan must never stop the server
                log.exception("repository scan failed")

    async def close(self) -> None:
        """Drain and unload everything."""
        async with self._lock:
            for name in list(self._models):
                await self._retire_all(name)
