"""The on-demand rescan of each model control mode, on a repository of synthetic models (no server)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.models.control import ModelControlError, check_rescan
from server.models.repository import ModelRepository
from server.settings import Settings
from tests.observe import synthetic_repository


def test_only_mode_none_refuses_a_rescan() -> None:
    check_rescan("poll")
    check_rescan("explicit")
    with pytest.raises(ModelControlError, match="model_control_mode=none"):
        check_rescan("none")


@pytest.mark.parametrize(("mode", "after"), [("none", ["syn"]), ("poll", ["added", "syn"]),
                                             ("explicit", ["syn"])])
async def test_a_second_scan_follows_the_mode(tmp_path: Path, mode: str, after: list[str]) -> None:
    repo = synthetic_repository(tmp_path / "repo")
    catalog = ModelRepository(Settings(model_repository=repo, model_control_mode=mode, load_models="syn",
                                       poll_interval=0))
    await catalog.sync()  # the scan at start runs in every mode
    try:
        assert catalog.names() == ["syn"]
        shutil.copytree(repo / "syn", repo / "added")
        if mode == "none":
            with pytest.raises(ModelControlError, match="repository sync is refused"):
                await catalog.sync()
        else:
            await catalog.sync()
        assert catalog.names() == after
    finally:
        await catalog.close()
