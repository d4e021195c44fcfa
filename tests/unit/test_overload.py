"""The front end's lag measurement and the refusal rule (server/admission/overload.py), on a real event loop."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from server.admission.overload import FLOOR, LoopLag, too_late


@pytest.mark.parametrize(("lag", "budget", "share", "refused"), [
    (0.030, 0.245, 0.1, True),  # over a tenth of 245 ms
    (0.020, 0.245, 0.1, False),  # under it
    (0.0245, 0.245, 0.1, False),  # exactly the share: kept
    (0.030, 0.245, 0.0, False),  # share 0: never
    (FLOOR * 0.9, 0.002, 0.1, False),  # under the floor, whatever the SLO
    (FLOOR * 1.5, 0.002, 0.1, True),  # over the floor and over the share of a 2 ms budget
    (5.0, 1000.0, 0.1, False),  # a long SLO tolerates a long stall
])
def test_too_late_is_lag_over_a_share_of_the_budget(lag, budget, share, refused):
    assert too_late(lag, budget, share) is refused


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_a_stalled_loop_reads_behind_at_once_and_its_next_tick_records_the_stall(loop_factory):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_stall_and_measure())


async def _stall_and_measure() -> None:
    seen: list[float] = []
    ticked, recorded = asyncio.Event(), asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        if len(seen) >= 3:
            ticked.set()
        if lag >= 0.08:
            recorded.set()

    lag = LoopLag(interval=0.002, observe=observe)
    assert lag.behind() == 0.0  # not started: never behind
    lag.start()
    await asyncio.wait_for(ticked.wait(), 5)  # a few ticks of a quiet loop
    assert max(seen) < 0.08
    behind_during_stall: list[float] = []

    def stall() -> None:
        time.sleep(0.1)  # the loop is blocked, as by a burst of work: its timer goes overdue
        behind_during_stall.append(lag.behind())

    asyncio.get_running_loop().call_soon(stall)
    await asyncio.wait_for(recorded.wait(), 5)
    assert behind_during_stall[0] >= 0.09  # seen before the timer ran: the overdue time counts
    assert lag.lag >= 0.08 and lag.behind() >= 0.08  # the tick after the stall: its lateness
    assert max(seen) < 1.0
    lag.stop()
    assert lag.lag == 0.0 and lag.behind() == 0.0
