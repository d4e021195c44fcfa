"""The online cost model: seeded, updated, robust to outliers and to rarely seen sizes, monotone."""

import math

import pytest

from batching.cost_model import CostModel


def test_nothing_measured_predicts_zero():
    model = CostModel()
    assert not model.known
    assert model.predict(8) == 0.0


def test_warm_up_seeds_alone_give_the_fitted_line():
    model = CostModel()
    model.seed({1: 0.002, 2: 0.003, 4: 0.005, 8: 0.009, 16: 0.017, 32: 0.033})  # 1 ms + 1 ms a row
    assert model.known
    for size in (1, 3, 8, 20, 32, 64):
        assert model.predict(size) == pytest.approx(0.001 + 0.001 * size)


def test_one_measured_size_scales_proportionally():
    model = CostModel()
    model.seed({8: 0.010})
    assert model.predict(16) == pytest.approx(0.020)
    assert model.predict(4) == pytest.approx(0.005)


def trusted_at(sizes_costs, repeats=8, **kwargs):
    model = CostModel(**kwargs)
    for size, seconds in sizes_costs.items():
        for _ in range(repeats):
            model.observe(size, seconds)
    return model


def test_trusted_sizes_are_believed_and_interpolated():
    model = trusted_at({4: 0.010, 8: 0.020, 16: 0.030})
    assert model.predict(8) == pytest.approx(0.020)
    assert model.predict(12) == pytest.approx(0.025)  # between two trusted sizes
    per_row = (model.predict(40) - model.predict(32)) / 8
    assert per_row > 0 and model.predict(32) == pytest.approx(0.030 + per_row * 16)  # beyond: the fitted slope
    assert model.predict(2) <= 0.010  # below: the line, capped at the smallest trusted size


def test_a_stale_seed_at_an_unseen_size_is_outvoted_by_live_batches():
    model = CostModel()
    model.seed({1: 0.010, 8: 0.020, 32: 0.500})  # warm-up of size 32 ran while the machine was busy
    for _ in range(16):
        model.observe(4, 0.012)
        model.observe(8, 0.016)
    assert model.predict(32) < 0.060  # 8's estimate plus the per-row cost the live batches show


def test_one_slow_batch_at_a_rare_size_does_not_make_larger_sizes_expensive():
    model = trusted_at({2: 0.004, 4: 0.006}, repeats=16)
    model.observe(13, 0.740)  # once, under a neighbour's load
    assert model.predict(16) < 0.2
    assert model.predict(4) == pytest.approx(0.006)


def test_a_few_outliers_do_not_move_a_trusted_size():
    model = trusted_at({32: 0.040}, repeats=16)
    for _ in range(3):  # a GC pause, a page fault, a batch run twice
        model.observe(32, 2.0)
    assert model.predict(32) == pytest.approx(0.040)


def test_a_lasting_change_replaces_the_estimate_within_the_window():
    model = trusted_at({16: 0.020}, repeats=8, window=8)
    model.observe(16, 0.060)
    assert model.predict(16) == pytest.approx(0.020)
    for _ in range(7):
        model.observe(16, 0.060)
    assert model.predict(16) == pytest.approx(0.060)


def test_predictions_never_decrease_with_the_batch_size():
    model = trusted_at({1: 0.005, 2: 0.003, 4: 0.004, 8: 0.012})  # noisy: 2 measured cheaper than 1
    model.observe(6, 0.001)  # and an untrusted oddity
    costs = [model.predict(n) for n in range(1, 40)]
    assert costs == sorted(costs)
    assert model.predict(2) == pytest.approx(0.005)


def test_observe_reports_whether_the_estimate_changed_and_ignores_nonsense():
    model = CostModel(window=4, trusted=2)
    assert model.observe(4, 0.010) is True
    assert model.observe(4, 0.010) is True  # the size became trusted
    assert model.observe(4, 0.010) is False
    assert model.observe(4, math.nan) is False
    assert model.observe(4, -1.0) is False
    assert model.observe(0, 0.010) is False
    assert model.observations == 3


def test_invalid_parameters():
    with pytest.raises(ValueError, match="window"):
        CostModel(window=0)
    with pytest.raises(ValueError, match="quantile"):
        CostModel(quantile=1.5)
    with pytest.raises(ValueError, match="trusted"):
        CostModel(window=4, trusted=5)
