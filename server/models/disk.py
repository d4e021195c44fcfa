"""The repository on disk: TF Serving's layout (ROOT/NAME/VERSION/saved_model.pb), model folders and versions."""

from __future__ import annotations

from pathlib import Path

from server.models.catalog import ModelNotFound
from server.models.control import ModelControlError, check_name


def version_stamp(path: Path) -> float:
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        if (path / name).exists():
            return (path / name).stat().st_mtime
    return -1.0


def scan_versions(model_dir: Path, synthetic: bool = False) -> dict[int, Path]:
    """Numeric subfolders holding a SavedModel (any numeric subfolder for a synthetic model)."""
    return {int(child.name): child for child in model_dir.iterdir()
            if child.is_dir() and child.name.isdigit() and (synthetic or version_stamp(child) >= 0)}


def model_dir(root: Path, name: str) -> Path:
    """The folder of model ``name``: a direct child of ``root`` once every link is resolved."""
    check_name(name)
    path = root / name
    if not path.is_dir():
        raise ModelNotFound(f"model {name!r} is not in the repository")
    if path.resolve().parent != root.resolve():
        raise ModelControlError(f"model {name!r} resolves outside the repository (a symbolic link leading out)")
    return path
