"""Model control: which models the repository serves, and the V2 repository API that changes it.

Three modes (``--model-control-mode``), as Triton names them:

- ``poll``: serve every model folder and rescan every ``poll_interval`` seconds (new versions, removed
  ones, changed ``model.yaml``); the repository API may index but not load or unload.
- ``explicit``: serve only ``load_models`` at start (``*``: all), then what the repository API
  loads; nothing is rescanned. ``load`` of a served model applies its folder and model.yaml again.
- ``none``: serve every model folder once; nothing changes until a restart (load, unload and an
  on-demand rescan, ``POST /admin/repository/sync``, are refused, as Triton refuses load and unload).

An on-demand rescan (:func:`check_rescan`) in ``poll`` mode scans every folder now; in ``explicit`` mode it
scans the loaded models only (new versions, a changed model.yaml) and never loads another one.

A load or unload drains and warms exactly like the file watcher: new versions are loaded and warmed
beside the served ones, then switched; removed ones drain their queue first. A model's name must match
:data:`NAME` and its folder must resolve to a direct child of the repository (no ``..``, no absolute
path, no symbolic link leading out); folders that do not are never served, in any mode.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from server.models.config import ModelConfig, ModelConfigError
from server.models.repository import (
    ModelCatalog,
    ModelNotFound,
    ModelRepository,
    ModelState,
    ModelVersion,
    ObserverFactory,
    StateListener,
)
from server.settings import Settings

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
TRITON_STATES = {ModelState.AVAILABLE: "READY", ModelState.LOADING: "LOADING", ModelState.UNLOADING: "UNLOADING",
                 ModelState.START: "LOADING", ModelState.END: "UNAVAILABLE"}


class ModelControlError(ValueError):
    """A repository API request that cannot be done: a bad name or config, a failed load, the wrong mode (400)."""


def check_name(name: str) -> str:
    """``name`` if it may name a model; else ModelControlError saying why."""
    if not NAME.fullmatch(name) or ".." in name:
        raise ModelControlError(f"invalid model name {name[:140]!r}: use letters, digits, '_', '-' and '.' "
                                "(not '..'), starting with a letter or digit, at most 128 characters")
    return name


def model_dir(root: Path, name: str) -> Path:
    """The folder of model ``name``: a direct child of ``root`` once every link is resolved."""
    check_name(name)
    path = root / name
    if not path.is_dir():
        raise ModelNotFound(f"model {name!r} is not in the repository")
    if path.resolve().parent != root.resolve():
        raise ModelControlError(f"model {name!r} resolves outside the repository (a symbolic link leading out)")
    return path


def parse_override(value: Any) -> ModelConfig:
    """A load request's ``config`` parameter (model.yaml's keys, as a JSON object or string), validated."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ModelControlError(f"parameters.config is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ModelControlError("parameters.config must be an object of model.yaml keys (or that object as JSON)")
    try:
        return ModelConfig.model_validate(value)
    except ValidationError as error:
        problems = [f"unknown key {'.'.join(map(str, e['loc']))!r}" if e["type"] == "extra_forbidden"
                    else f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
        raise ModelControlError("parameters.config: " + "; ".join(problems)) from None


def check_rescan(mode: str) -> None:
    """Whether an on-demand rescan of the repository may run in ``mode``; else ModelControlError (400)."""
    if mode == "none":
        raise ModelControlError("repository sync is refused: the server runs with model_control_mode=none, which "
                                "serves the models found at start until it restarts; start it with "
                                "--model-control-mode poll (rescans) or explicit (the repository API) to change them")


class ControlledRepository(ModelRepository):
    """A ModelRepository that serves the models its mode says, and answers the repository API."""

    def __init__(self, settings: Settings, make_observer: ObserverFactory | None = None,
                 on_state: StateListener | None = None) -> None:
        super().__init__(settings, make_observer, on_state)
        self.mode = settings.model_control_mode
        self._overrides: dict[str, ModelConfig] = {}
        self._load_errors: dict[str, str] = {}  # the last API load that failed, shown in the index
        self._skipped: set[str] = set()  # folders whose names or links break the rules (warned about)
        self._wanted: set[str] | None = None  # explicit mode: the models loaded; None: every folder
        self._scanned = False  # the first scan (at start) runs in every mode; later ones as check_rescan says
        if self.mode == "explicit":
            self.empty_is_ready = True
            names = {n.strip() for n in settings.load_models.split(",") if n.strip()}
            self._wanted = None if "*" in names else names

    def _folders(self) -> dict[str, Path]:
        """Every model folder that may be served: a valid name, inside the repository."""
        found = {}
        for name in super()._on_disk():
            try:
                found[name] = model_dir(self.root, name)
            except (ModelControlError, ModelNotFound) as error:
                if name not in self._skipped:  # once, not at every scan
                    self._skipped.add(name)
                    log.warning("folder %r in the model repository is not served: %s", name, error)
        return found

    def _on_disk(self) -> dict[str, Path]:
        folders = self._folders()
        if self._wanted is None:
            if self.mode == "explicit":  # load_models: * — the folders of the first scan, fixed from then on
                self._wanted = set(folders)
            return folders
        missing = self._wanted - set(folders) - self._skipped
        if missing:
            self._skipped |= missing
            log.warning("models %s are to be served but have no folder in the repository", sorted(missing))
        return {name: path for name, path in folders.items() if name in self._wanted}

    def _model_config(self, name: str, model_dir: Path) -> ModelConfig:
        override = self._overrides.get(name)
        return override if override is not None else super()._model_config(name, model_dir)

    async def sync(self) -> None:
        if self._scanned:
            check_rescan(self.mode)
        await super().sync()
        self._scanned = True

    async def poll(self) -> None:
        if self.mode == "poll":
            await super().poll()

    # ---- the repository API --------------------------------------------------------

    def _check_mode(self, action: str) -> None:
        if self.mode != "explicit":
            raise ModelControlError(f"{action} is refused: the server runs with model_control_mode={self.mode}; "
                                    "start it with --model-control-mode explicit to load and unload models")

    async def load_model(self, name: str, config: dict[str, object] | None = None) -> None:
        self._check_mode("load")
        override = parse_override(config) if config is not None else None
        path = model_dir(self.root, name)
        try:  # checked now, so a broken model.yaml is the answer, not a log line
            asked = override if override is not None else super()._model_config(name, path)
        except ModelConfigError as error:
            raise ModelControlError(f"model {name!r} was not loaded: {error}") from None
        async with self._lock:
            assert self._wanted is not None
            fresh = not any(mv.ready for mv in self._models.get(name, {}).values())
            if fresh:
                self._failed_configs.pop(name, None)  # nothing served: nothing to keep serving
            self._wanted.add(name)
            if override is not None:
                self._overrides[name] = override
            else:
                self._overrides.pop(name, None)
            await self._sync_model(name, path)
            versions = self._models.get(name, {})
            problem = None
            if not versions:
                problem = "it has no version folder with a model"
            elif not any(mv.ready for mv in versions.values()):
                failed = [mv.error for mv in versions.values() if mv.error]
                problem = failed[0] if failed else "no version became ready"
            if problem is not None and fresh:  # undone: a failed load leaves the server as it was (and ready)
                self._wanted.discard(name)
                self._overrides.pop(name, None)
                for mv in versions.values():
                    mv.error = None  # retired on purpose now: its series go, no not-ready alert for it
                await self._retire_all(name)
                self._load_errors[name] = f"failed to load: {problem}"
                raise ModelControlError(f"model {name!r} was not loaded: {problem}")
            self._load_errors.pop(name, None)
        if problem is not None:
            raise ModelControlError(f"model {name!r} failed to load: {problem}")
        if self._failed_configs.get(name) == asked:
            raise ModelControlError(f"model {name!r} serves on with its previous settings: the new ones failed "
                                    "to load (the server log says why)")

    async def unload_model(self, name: str) -> None:
        self._check_mode("unload")
        check_name(name)
        async with self._lock:
            assert self._wanted is not None
            if name not in self._wanted and name not in self._models:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._wanted.discard(name)
            self._overrides.pop(name, None)
            self._failed_configs.pop(name, None)
            self._load_errors.pop(name, None)
            await self._retire_all(name)
            self._config_errors.pop(name, None)

    async def index(self, ready_only: bool = False) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        for name in sorted(set(self._folders()) | set(self.names())):
            versions = self._models.get(name, {})
            error = self.config_error(name)
            if not versions:
                if not ready_only:
                    rows.append({"name": name, "version": "", "state": "UNAVAILABLE",
                                 "reason": error or self._load_errors.get(name, "unloaded")})
                continue
            for mv in sorted(versions.values(), key=lambda mv: mv.version):
                if not ready_only or mv.ready:
                    rows.append(_row(mv))
        return rows


def _row(mv: ModelVersion) -> dict[str, object]:
    row: dict[str, object] = {"name": mv.name, "version": str(mv.version), "state": TRITON_STATES[mv.state],
                              "reason": mv.error or "", "backend": mv.backend, "device": mv.device}
    pids = getattr(mv.pool, "pids", None)
    if pids is not None:
        row["worker_pids"] = pids
    return row


async def serve_exactly(catalog: ModelCatalog, names: Sequence[str]) -> None:
    """TF Serving's ``HandleReloadConfigRequest`` on any catalog (one process, or a front end relaying to
    the engine): afterwards exactly ``names`` are served, each loaded again (so a changed model.yaml
    applies), every other loaded model unloaded. Explicit mode only, as load and unload."""
    for name in names:
        check_name(name)
    rows = await catalog.index()
    missing = sorted(set(names) - {str(row["name"]) for row in rows})
    if missing:  # refused before anything changes
        raise ModelNotFound(f"models {missing} are not in the repository")
    loaded = {str(row["name"]) for row in rows if row["version"]}
    for name in names:
        await catalog.load_model(name)
    for name in sorted(loaded - set(names)):
        await catalog.unload_model(name)
