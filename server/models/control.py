"""Model control: which models the repository serves, and the V2 repository API that changes it (the rules
here; ``server.models.repository.ModelRepository`` follows them).

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
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from server.models.catalog import ModelCatalog, ModelNotFound
from server.models.config import ModelConfig, config_problems

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ModelControlError(ValueError):
    """A repository API request that cannot be done: a bad name or config, a failed load, the wrong mode (400)."""


def check_name(name: str) -> str:
    """``name`` if it may name a model; else ModelControlError saying why."""
    if not NAME.fullmatch(name) or ".." in name:
        raise ModelControlError(f"invalid model name {name[:140]!r}: use letters, digits, '_', '-' and '.' "
                                "(not '..'), starting with a letter or digit, at most 128 characters")
    return name


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
        raise ModelControlError(f"parameters.config: {config_problems(error, values=False)}") from None


def check_rescan(mode: str) -> None:
    """Whether an on-demand rescan of the repository may run in ``mode``; else ModelControlError (400)."""
    if mode == "none":
        raise ModelControlError("repository sync is refused: the server runs with model_control_mode=none, which "
                                "serves the models found at start until it restarts; start it with "
                                "--model-control-mode poll (rescans) or explicit (the repository API) to change them")


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
