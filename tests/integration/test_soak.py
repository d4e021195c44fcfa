"""The one-minute soak: mixed traffic on every demo model and protocol, with bad requests; nothing grows."""

from __future__ import annotations

import pytest

from load_tests.soak import SMOKE_THRESHOLDS, soak, table

pytestmark = pytest.mark.slow


def test_a_minute_of_mixed_traffic_answers_right_and_grows_nothing(demo_repository, tmp_path):
    result = soak(demo_repository, duration=60, interval=3, clients=6, thresholds=SMOKE_THRESHOLDS,
                  log_dir=tmp_path, frontends=2)
    assert result.ok, "\n".join([*result.failures, table(result)])
    good, bad = (sum(n for k, n in result.outcomes.items() if k.startswith(kind)) for kind in ("good", "bad"))
    assert result.outcomes["good 200"] == good > 1000
    assert bad > 50 and result.outcomes["bad 400"] + result.outcomes["bad 404"] == bad
    assert len(result.samples) >= 19
    roles = {key.split()[0] for key in result.samples[-1].processes}
    assert roles == {"supervisor", "engine", "frontend"}  # read from their process_* series
    assert sum(key.startswith("frontend ") for key in result.samples[-1].processes) == 2
