"""Settings that need more than a type: worker_cores (read as taskset -c reads a list) and the SLO reserve."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.settings import Settings, parse_cores


@pytest.mark.parametrize(("text", "cores"), [("", ()), ("0", (0,)), ("3,1", (1, 3)), ("0,2-4", (0, 2, 3, 4)),
                                             (" 1 , 1-2 ", (1, 2))])
def test_core_lists(text, cores):
    assert parse_cores(text) == cores


@pytest.mark.parametrize(("settings", "message"), [
    ({"workers": "process", "worker_cores": "a"}, "'a' is not a core number"),
    ({"workers": "process", "worker_cores": "3-1"}, "'3-1' is not a range"),
    ({"workers": "process", "worker_cores": "-1"}, "is not a"),
    ({"worker_cores": "0"}, "needs workers=process"),
])
def test_bad_core_lists_are_refused_with_the_reason(settings, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**settings)


def test_the_worker_spec_carries_the_cores():
    from server.models.config import ModelConfig

    spec = ModelConfig().worker_spec(Settings(workers="process", worker_cores="1-2"))
    assert spec.cores == (1, 2)


def test_the_slo_reserve_defaults_to_a_fiftieth_of_the_slo():
    from server.models.config import ModelConfig

    assert ModelConfig(slo_ms=250).batch_config(Settings(), 1, None).slo_reserve == pytest.approx(0.005)
    assert ModelConfig(slo_ms=250, slo_reserve_ms=0).batch_config(Settings(), 1, None).slo_reserve == 0
    assert ModelConfig().batch_config(Settings(slo_reserve_ms=3), 1, None).slo_reserve == pytest.approx(0.003)


def test_serve_help_lists_every_setting_as_a_flag(capsys):
    """Every setting is a ``serve`` flag, and --help prints (a "%" in a description once crashed it)."""
    from server.tools.cli import main

    with pytest.raises(SystemExit) as done:
        main(["serve", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')} VALUE" in text
    assert "Default: 2 % of slo_ms" in " ".join(text.split())
