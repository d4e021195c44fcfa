"""The generator's open-loop arrival processes: the mean rate holds; bursty arrivals come only in the on-phases."""

import numpy as np
import pytest

from load_tests.generator import BURST_ON, BURST_PERIOD, arrival_offsets


@pytest.mark.parametrize("process", ["poisson", "bursty"])
def test_mean_rate(process):
    offsets = arrival_offsets(process, rate=400.0, total=20.0, seed=1)
    assert len(offsets) / 20.0 == pytest.approx(400.0, rel=0.05)
    assert np.all(np.diff(offsets) >= 0) and offsets[-1] < 20.0


def test_bursty_arrivals_fall_in_the_on_phases_at_a_higher_rate():
    offsets = arrival_offsets("bursty", rate=400.0, total=20.0, seed=2)
    assert np.all(offsets % BURST_PERIOD < BURST_ON * BURST_PERIOD)
    per_on_second = len(offsets) / (20.0 * BURST_ON)
    assert per_on_second == pytest.approx(400.0 / BURST_ON, rel=0.05)
