"""The admitted-rate limit (server/admission/rate.py): times given, as a table of events."""

from __future__ import annotations

import itertools
import math

import pytest

from server.admission.rate import BURST, CUT, GROW, MIN_ANSWERS, STEP, STREAK, WINDOW, AdmissionRate


def answer(rate: AdmissionRate, start: float, span: float, good: int, late: int, took: float = 0.001) -> float:
    """``good`` then ``late`` answers spread over ``span`` seconds from ``start``, each ``took`` seconds
    after its request started; the last time."""
    count = good + late
    now = start
    for i in range(count):
        now = start + span * i / count
        rate.answered(i < good, now, now - took)
    return now


def test_only_late_windows_in_a_row_start_limiting():
    rate = AdmissionRate(0.05, 0.0)  # the default streak
    assert STREAK == 3
    for late in (True, True, False, True, True):  # a stall, then another: never three in a row
        answer(rate, rate._start, WINDOW * 0.99, good=0 if late else 100, late=100 if late else 0)
        rate._judge(rate._start + WINDOW)
        assert not rate.limiting
    answer(rate, rate._start, WINDOW * 0.99, good=0, late=100)
    rate._judge(rate._start + WINDOW)
    assert rate.limiting  # the third in a row
    assert rate.rate == pytest.approx(CUT * 100 / WINDOW)


def test_on_time_answers_never_limit():
    changes: list[tuple[float, float]] = []
    rate = AdmissionRate(0.05, 0.0, lambda old, new: changes.append((old, new)), streak=1)
    answer(rate, 0.0, 1.0, good=10_000, late=0)
    assert not rate.limiting and rate.rate == math.inf and changes == []


def test_a_late_window_cuts_to_a_share_of_the_rate_answered_in_it():
    changes: list[tuple[float, float]] = []
    rate = AdmissionRate(0.05, 0.0, lambda old, new: changes.append((old, new)), streak=1)
    answer(rate, 0.0, WINDOW, good=400, late=100)  # 500 answers in one window, a fifth late
    rate.answered(True, WINDOW + 1e-6, WINDOW)  # closes it
    assert rate.limiting and changes == [(math.inf, rate.rate)]
    assert rate.rate == pytest.approx(CUT * 501 / (WINDOW + 1e-6), rel=1e-3)


@pytest.mark.parametrize(("good", "late", "limited"), [
    (95, 5, False),  # exactly the share: not over it
    (94, 6, True),  # over it
    (0, MIN_ANSWERS - 1, False),  # too few answers to judge
    (0, MIN_ANSWERS, True),
])
def test_the_share_and_the_least_count_that_cut(good, late, limited):
    rate = AdmissionRate(0.05, 0.0, streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=good, late=late)
    rate._judge(WINDOW)  # the window closes with these answers only
    assert rate.limiting is limited


def test_over_the_rate_requests_are_refused_and_under_it_let_through():
    rate = AdmissionRate(0.05, 0.0, streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=0, late=1000)
    rate._judge(WINDOW)
    limit = rate.rate  # ~17,000/s
    # Arrivals at twice the limit, for one window: about half let through, a burst's worth at most more.
    arrivals = int(2 * limit * WINDOW)
    start = WINDOW
    admitted = sum(rate.admit(start + WINDOW * 0.999 * i / arrivals) for i in range(arrivals))
    assert limit * WINDOW * 0.95 <= admitted <= limit * WINDOW + limit * BURST + 1


def test_late_answers_of_requests_let_through_before_the_cut_do_not_cut_again():
    rate = AdmissionRate(0.05, 0.0, streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=0, late=1000)
    rate._judge(WINDOW)
    first = rate.rate
    arrivals = int(first * WINDOW)  # arriving at the limit's rate: it stays
    for i in range(arrivals):
        rate.admit(WINDOW + WINDOW * i / arrivals)
    answer(rate, WINDOW, WINDOW * 0.99, good=0, late=1000, took=0.06)  # late, but started before the cut
    rate._judge(2 * WINDOW)
    assert rate.rate == pytest.approx(first * (1 + GROW) + STEP)  # raised, not cut
    answer(rate, 2 * WINDOW, WINDOW * 0.99, good=0, late=100, took=0.01)  # late, started after the cut
    rate._judge(3 * WINDOW)
    assert rate.rate == pytest.approx(CUT * 100 / WINDOW)  # cut again, to the rate answered since


def test_on_time_windows_raise_the_rate_until_it_is_dropped():
    changes: list[tuple[float, float]] = []
    rate = AdmissionRate(0.05, 0.0, lambda old, new: changes.append((old, new)), streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=0, late=100)
    rate._judge(WINDOW)
    now = WINDOW
    rates = [rate.rate]
    for _ in range(400):  # 1,000 requests/s arrive, all answered on time
        for i in range(50):
            rate.admit(now + WINDOW * i / 50)
        now += WINDOW
        rate.answered(True, now, now - 0.001)
        rates.append(rate.rate)
        if not rate.limiting:
            break
    assert changes[0][0] == math.inf and changes[-1][1] == math.inf  # limited, then not
    assert [new for _, new in changes[:-1]] == rates[:-1]  # every change reported
    assert all(later > earlier for earlier, later in itertools.pairwise(rates[:-1]))  # raised every window
    assert rates[-2] <= 2 * 1000 * 1.05 and rates[-1] == math.inf  # dropped once over twice the arrivals


def test_a_limit_cut_near_zero_recovers():
    rate = AdmissionRate(0.05, 0.0, streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=0, late=MIN_ANSWERS)
    rate.answered(False, 1.0, 0.999)  # the window closes a second after it opened: cut to ~18/s
    assert rate.limiting and rate.rate < 20
    now = 1.0
    for _ in range(20):  # 2,000 requests/s arrive
        for i in range(100):
            rate.admit(now + WINDOW * i / 100)
        now += WINDOW
    assert rate.limiting and rate.rate > 20 * STEP  # STEP a window at least, whatever the rate


def test_a_rate_under_one_request_a_burst_still_admits_at_that_rate():
    rate = AdmissionRate(0.05, 0.0, streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=0, late=MIN_ANSWERS)
    rate.answered(False, WINDOW, WINDOW - 0.001)  # cut; then set to 100/s: half a request in BURST
    rate.rate = 100.0
    admitted = [i for i in range(1, 41) if rate.admit(WINDOW + 0.001 * i)]  # 1,000/s for 40 ms
    assert 3 <= len(admitted) <= 4 and admitted[0] in (10, 11)  # one every ~10 ms: the rate, not zero


def test_a_window_without_arrivals_drops_the_limit_and_a_quiet_one_too():
    rate = AdmissionRate(0.05, 0.0, streak=1)
    answer(rate, 0.0, WINDOW * 0.99, good=0, late=1000)
    rate._judge(WINDOW)
    assert rate.limiting
    assert rate.admit(1.0)  # the first request after a pause: its window had none, the limit is gone
    assert not rate.limiting
    answer(rate, 1.0, WINDOW * 0.99, good=0, late=1000)
    rate._judge(1.0 + WINDOW)
    for i in range(5):  # then 100 requests/s: under half the limit, which is dropped a window later
        rate.admit(1.051 + 0.009 * i)
    assert rate.limiting
    rate.admit(1.0 + 2 * WINDOW + 0.001)
    assert not rate.limiting


def test_the_window_is_a_parameter():
    rate = AdmissionRate(0.05, 0.0, window=2.0, streak=1)
    answer(rate, 0.0, 1.0, good=0, late=100)  # a second of late answers: within the window, not judged
    assert not rate.limiting
    rate.answered(False, 2.0, 1.999)
    assert rate.limiting and rate.rate == pytest.approx(CUT * 101 / 2.0)
