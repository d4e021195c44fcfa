"""The online cost model: seeded, updated, robust to outliers, monotone in the batch size."""

import math

import pytest

from batching.cost_model import CostModel


def test_nothing_measured_predicts_zero():
    model = CostModel()
    assert not model.known
    assert model.predict(8) == 0.0


def test_seed_gives_predictions_at_the_seeded_sizes_and_between_them():
    model = CostModel()
    model.seed({1: 0.002, 8: 0.009, 32: 0.033})
    assert model.known
    assert model.predict(1) == pytest.approx(0.002)
    assert model.predict(8) == pytest.approx(0.009)
    assert model.predict(20) == pytest.approx(0.009 + (0.033 - 0.009) * 12 / 24)  # linear between 8 and 32
    assert model.predict(64) == pytest.approx(0.033 + (0.033 - 0.009) * 32 / 24)  # the last slope, beyond


@pytest.mark.parametrize(
    ("seeded", "size", "expected"),
    [
        ({8: 0.010}, 4, 0.010),  # below the smallest measured size: its cost bounds it
        ({8: 0.010}, 16, 0.020),  # beyond the only measured size: proportional
        ({4: 0.004, 8: 0.008}, 2, 0.004),
    ],
)
def test_unmeasured_sizes(seeded, size, expected):
    model = CostModel()
    model.seed(seeded)
    assert model.predict(size) == pytest.approx(expected)


def test_a_few_outliers_do_not_move_the_prediction():
    model = CostModel(window=16, quantile=0.75)
    for _ in range(16):
        model.observe(32, 0.040)
    for _ in range(3):  # a GC pause, a page fault, a batch run twice
        model.observe(32, 2.0)
    assert model.predict(32) == pytest.approx(0.040)


def test_a_lasting_change_replaces_the_estimate_within_the_window():
    model = CostModel(window=8)
    for _ in range(8):
        model.observe(16, 0.020)
    model.observe(16, 0.060)
    assert model.predict(16) == pytest.approx(0.020)  # one slow batch of eight: an outlier
    for _ in range(7):
        model.observe(16, 0.060)
    assert model.predict(16) == pytest.approx(0.060)


def test_predictions_never_decrease_with_the_batch_size():
    model = CostModel()
    model.seed({1: 0.005, 2: 0.003, 4: 0.004, 8: 0.012})  # noisy: 2 measured cheaper than 1
    costs = [model.predict(n) for n in range(1, 20)]
    assert costs == sorted(costs)
    assert model.predict(2) == pytest.approx(0.005)


def test_observe_reports_whether_the_estimate_changed_and_ignores_nonsense():
    model = CostModel(window=4, quantile=0.5)
    assert model.observe(4, 0.010) is True
    assert model.observe(4, 0.010) is False
    assert model.observe(4, math.nan) is False
    assert model.observe(4, -1.0) is False
    assert model.observe(0, 0.010) is False
    assert model.observations == 2


def test_invalid_parameters():
    with pytest.raises(ValueError, match="window"):
        CostModel(window=0)
    with pytest.raises(ValueError, match="quantile"):
        CostModel(quantile=1.5)
