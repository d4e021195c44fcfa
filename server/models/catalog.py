"""The catalog of served model versions: what every process that routes requests knows of a model.

A ``ModelVersion`` is one version's state, config and description (and, where it is served, its
batcher); a ``ModelCatalog`` resolves a request's model, version or label to one. The repository
(server/models/repository.py) keeps one from disk; a front end keeps the engine's
(server/multiprocess/remote.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from batching import BatchConfig
from server.core.vocabulary import Signature
from server.models.config import ModelConfig
from server.runtime import WorkerPool


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
                     timeout: float | None = None, trace: Any = None) -> dict[str, np.ndarray]: ...

    async def close(self, drain: bool = True) -> None: ...


@dataclass(frozen=True)
class VersionDescription:
    """What a loaded version tells clients about itself; kept after it is retired."""

    signature: Signature  # the default: what a request without a signature name runs
    backend: str
    device: str
    instances: int
    batch_sizes: tuple[int, ...] | None = None
    signatures: Mapping[str, Signature] = field(default_factory=dict)  # every one served, the default first


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
    batcher: BatchQueue | None = None  # the default signature's
    batchers: dict[str, BatchQueue] = field(default_factory=dict)  # one per signature served, by name
    batch_config: BatchConfig | None = None
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    warmup_complete: bool = False  # every warm-up batch ran (False: generated inputs rejected, or no warm-up)

    @property
    def signature(self) -> Signature:
        assert self.description is not None, "signature of a version that is not loaded"
        return self.description.signature

    def signature_named(self, name: str | None) -> Signature | None:
        """The served signature called ``name`` (None or "": the default), else None."""
        assert self.description is not None, "signature of a version that is not loaded"
        if not name or name == self.description.signature.name:
            return self.description.signature
        return self.description.signatures.get(name)

    def queue(self, signature: str | None) -> BatchQueue:
        """The batcher of a served signature (None or "": the default's)."""
        batcher = self.batchers.get(signature) if signature else self.batcher
        assert batcher is not None, f"no batcher for signature {signature!r} of {self.name}:{self.version}"
        return batcher

    @property
    def backend(self) -> str:
        return self.description.backend if self.description is not None else "tensorflow"

    @property
    def device(self) -> str:
        return self.description.device if self.description is not None else ""

    @property
    def ready(self) -> bool:
        return self.state is ModelState.AVAILABLE


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
        self.strict_readiness = True  # settings.strict_readiness

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
        if len(versions) == 1:  # the common case: the one version, if it serves
            (only,) = versions.values()
            if only.ready:
                return only
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
        """Strict (Triton's default): every model serves a version; a model that never loaded (a broken model.yaml,
        every version failed) makes the server unready. Not strict: ready while any model serves. A model serving
        on with its last good configuration after a broken model.yaml edit is ready (the error is in its status)."""
        serving = [any(mv.ready for mv in versions.values()) for versions in self._models.values()]
        if not self.strict_readiness:
            return any(serving) or self.empty_is_ready
        never_loaded = any(name not in self._models for name in self._config_errors)
        return (bool(serving) or self.empty_is_ready) and all(serving) and not never_loaded

    async def sync(self) -> None:
        """Bring the catalog up to date with the repository on disk."""
        raise NotImplementedError

    # ---- the repository API (ModelRepository's; relayed to the engine by a front end) ----

    async def index(self, ready_only: bool = False) -> list[dict[str, object]]:
        """Every model in the repository and the state of each version (Triton's repository index)."""
        raise NotImplementedError

    async def load_model(self, name: str, config: dict[str, object] | None = None) -> None:
        """Load (or load again, with changed settings) one model; ``config`` overrides its model.yaml."""
        raise NotImplementedError

    async def unload_model(self, name: str) -> None:
        """Drain and unload every version of one model."""
        raise NotImplementedError


