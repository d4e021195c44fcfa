"""The dispatch rule as a table: no event loop, no clock."""

import pytest

from batching import BatchConfig, Dispatch, QueueSnapshot, Wait, decide, should_wake

CFG = BatchConfig(max_batch_size=8, max_queue_delay=0.010)
PREF = BatchConfig(max_batch_size=32, max_queue_delay=0.010, preferred_batch_sizes=(4, 8))


@pytest.mark.parametrize(
    ("config", "rows", "arrival", "now", "closing", "expected"),
    [
        (CFG, 0, 0.0, 5.0, False, Wait(None)),
        (CFG, 3, 1.0, 1.004, False, Wait(1.010)),
        (CFG, 3, 1.0, 1.010, False, Dispatch(3)),
        (CFG, 8, 1.0, 1.0, False, Dispatch(8)),
        (CFG, 20, 1.0, 1.0, False, Dispatch(8)),
        (CFG, 3, 1.0, 1.0, True, Dispatch(3)),
        (CFG, 0, 1.0, 1.0, True, Wait(None)),
        (PREF, 4, 1.0, 1.0, False, Dispatch(4)),
        (PREF, 5, 1.0, 1.0, False, Wait(1.010)),
        (PREF, 8, 1.0, 1.0, False, Dispatch(8)),
        (PREF, 9, 1.0, 1.0, False, Dispatch(8)),
        (PREF, 5, 1.0, 1.02, False, Dispatch(5)),
        (PREF, 40, 1.0, 1.0, False, Dispatch(32)),
    ],
)
def test_decide(config, rows, arrival, now, closing, expected):
    assert decide(QueueSnapshot(rows, arrival, closing), now, config) == expected


EAGER = BatchConfig(max_batch_size=8, max_queue_delay=0.010, dispatch_when_idle=True)


@pytest.mark.parametrize(
    ("rows", "idle", "expected"),
    [(1, True, Dispatch(1)), (1, False, Wait(1.010)), (12, True, Dispatch(8)), (0, True, Wait(None))],
)
def test_dispatch_when_idle_skips_the_delay_only_while_no_batch_computes(rows, idle, expected):
    assert decide(QueueSnapshot(rows, 1.0, idle=idle), 1.0, EAGER) == expected


def test_without_dispatch_when_idle_a_lone_request_waits_for_the_delay():
    assert decide(QueueSnapshot(1, 1.0, idle=True), 1.0, CFG) == Wait(1.010)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue_delay": -1}, "max_queue_delay"),
        ({"preferred_batch_sizes": (64,)}, "preferred_batch_sizes"),
        ({"allowed_batch_sizes": (2, 4)}, "allowed_batch_sizes"),
        ({"max_queue_size": 0}, "max_queue_size"),
        ({"max_inflight_batches": 0}, "max_inflight_batches"),
        ({"priority_levels": 0}, "priority_levels"),
        ({"default_timeout": 0}, "default_timeout"),
    ],
)
def test_invalid_config_names_the_field(kwargs, field):
    from batching import InvalidBatchConfig

    with pytest.raises(InvalidBatchConfig, match=f"BatchConfig.{field}"):
        BatchConfig(**kwargs)


def test_padded_size_rounds_up_to_allowed_sizes():
    cfg = BatchConfig(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    assert [cfg.padded_size(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]
    assert BatchConfig(max_batch_size=8).padded_size(3) == 3


# The wake rule: the loop sleeps on what decide said before the event; should it look again after?
NOW = 1.004  # rows already queued arrived at 1.0, so with a 10 ms delay the loop sleeps until 1.010
EAGER8 = BatchConfig(max_batch_size=8, max_queue_delay=0.010, dispatch_when_idle=True)


def _after(before: QueueSnapshot, event: str) -> QueueSnapshot:
    """The snapshot once the event happened: "submit N", "batch done", "last batch done",
    or "head N since T" (a submit makes another, already queued shape group the head)."""
    verb, *args = event.split()
    if verb == "submit":
        arrival = before.oldest_arrival if before.rows else NOW
        return QueueSnapshot(before.rows + int(args[0]), arrival, before.closing, before.idle)
    if verb == "head":
        return QueueSnapshot(int(args[0]), float(args[2]), before.closing, before.idle)
    return QueueSnapshot(before.rows, before.oldest_arrival, before.closing, before.idle or event == "last batch done")


@pytest.mark.parametrize(
    ("config", "rows", "idle", "event", "wake"),
    [
        # asleep until a submit (Wait(None))
        (CFG, 0, True, "submit 1", True),  # the loop must arm the delay timer
        (CFG, 0, False, "batch done", False),
        (CFG, 0, True, "last batch done", False),
        # asleep on the delay timer (Wait(1.010))
        (CFG, 3, False, "submit 1", False),  # same deadline, not full: the timer suffices
        (CFG, 7, False, "submit 1", True),  # a full batch
        (CFG, 7, False, "submit 3", True),
        (CFG, 3, False, "batch done", False),
        (CFG, 3, True, "last batch done", False),  # idle does not matter without dispatch_when_idle
        (CFG, 3, False, "head 2 since 0.998", True),  # the new head is due sooner: re-arm earlier
        (CFG, 3, False, "head 1 since 1.004", False),  # due later: the loop's timer fires first
        (CFG, 3, False, "head 1 since 0.990", True),  # overdue: dispatch now
        (PREF, 3, False, "submit 1", True),  # reaches preferred size 4
        (PREF, 5, False, "submit 1", False),  # 6 is no preferred size
        (PREF, 7, False, "submit 1", True),  # reaches 8
        (PREF, 7, False, "submit 2", True),  # above the largest preferred size
        (EAGER8, 3, False, "submit 1", False),  # a batch computes: keep gathering
        (EAGER8, 3, False, "batch done", False),  # another one still computes
        (EAGER8, 3, False, "last batch done", True),  # the model went idle
        (EAGER8, 0, True, "submit 1", True),
    ],
)
def test_should_wake(config, rows, idle, event, wake):
    before = QueueSnapshot(rows, 1.0, idle=idle)
    asleep_on = decide(before, NOW, config)
    assert isinstance(asleep_on, Wait)  # the loop sleeps only on a Wait
    assert should_wake(asleep_on, _after(before, event), NOW, config) is wake
