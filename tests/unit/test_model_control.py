"""server.models.control without a server: names, config overrides, and serve_exactly on a repository of
synthetic models (no TensorFlow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.models.catalog import ModelNotFound
from server.models.control import ModelControlError, check_name, parse_override, serve_exactly
from server.models.repository import ModelRepository
from server.settings import Settings
from tests.observe import synthetic_repository


@pytest.mark.parametrize("name", ["spam", "image_classifier", "a.b-c_1", "7", "x" * 128])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "a..b", ".hidden", "-x", "_x", "a/b", "a\\b", "/etc", "a b",
                                  "x" * 129, "a\x00", "é"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(ModelControlError, match="invalid model name"):
        check_name(name)


def test_override_accepts_model_yaml_keys_as_an_object_or_json() -> None:
    assert parse_override({"max_batch_size": 8}).max_batch_size == 8
    assert parse_override('{"max_batch_size": 8}').max_batch_size == 8
    with pytest.raises(ModelControlError, match="unknown key 'max_batch_sise'"):
        parse_override({"max_batch_sise": 8})


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = synthetic_repository(tmp_path / "repo")
    for name in ("b", "c"):
        shutil.copytree(root / "syn", root / name)
    return root


async def test_serve_exactly_loads_the_list_and_unloads_the_rest(repository: Path) -> None:
    settings = Settings(model_repository=repository, model_control_mode="explicit", load_models="syn,b")
    catalog = ModelRepository(settings)
    await catalog.sync()
    try:
        assert catalog.names() == ["b", "syn"] and catalog.ready
        await serve_exactly(catalog, ["b", "c"])
        assert catalog.names() == ["b", "c"]
        assert [row["name"] for row in await catalog.index(ready_only=True)] == ["b", "c"]
        with pytest.raises(ModelNotFound):
            await serve_exactly(catalog, ["syn", "missing"])
        with pytest.raises(ModelControlError, match="invalid model name"):
            await serve_exactly(catalog, ["../b"])
        assert catalog.names() == ["b", "c"]  # a refused list changes nothing
    finally:
        await catalog.close()


async def test_serve_exactly_is_refused_outside_explicit_mode(repository: Path) -> None:
    catalog = ModelRepository(Settings(model_repository=repository, model_control_mode="none"))
    await catalog.sync()
    try:
        with pytest.raises(ModelControlError, match="model_control_mode=none"):
            await serve_exactly(catalog, ["syn"])
    finally:
        await catalog.close()
