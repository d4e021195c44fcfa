"""LoopSaturation: the loop thread's and the process's CPU over windows, read from the CPU clocks."""

from __future__ import annotations

import pytest

from server.runtime import saturation
from server.runtime.saturation import LoopSaturation

STEP = 0.025  # wall seconds a test moves: more than the window (0.02)


class Clocks:
    """Wall, loop-thread and process CPU seconds, moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.wall = self.thread = self.process = 0.0
        monkeypatch.setattr(saturation.time, "perf_counter", lambda: self.wall)
        monkeypatch.setattr(saturation.time, "thread_time", lambda: self.thread)
        monkeypatch.setattr(saturation.time, "process_time", lambda: self.process)

    def run(self, loop: float, process: float, wall: float = STEP) -> None:
        """``wall`` seconds with the loop thread using ``loop`` of a core and the process ``process`` cores."""
        self.wall += wall
        self.thread += loop * wall
        self.process += process * wall


def test_the_loop_thread_busy_on_its_core_is_saturation(monkeypatch):
    clocks = Clocks(monkeypatch)
    busy = LoopSaturation(0.9, window=0.02, cores=8)
    assert busy() is False
    clocks.run(0.95, 0.95)
    assert busy() is True
    clocks.run(0.5, 0.5)
    assert busy() is False


def test_a_reading_lasts_its_window(monkeypatch):
    clocks = Clocks(monkeypatch)
    busy = LoopSaturation(0.9, window=0.02, cores=1)
    clocks.run(1.0, 1.0)
    assert busy() is True
    clocks.run(0.0, 0.0, wall=0.01)  # within the window: the last reading stands
    assert busy() is True
    clocks.run(0.0, 0.0, wall=0.015)  # a new window, with the loop idle
    assert busy() is False


def test_the_process_counts_on_the_cores_it_may_use_only_while_the_loop_works(monkeypatch):
    clocks = Clocks(monkeypatch)
    busy = LoopSaturation(0.9, window=0.02, cores=2)
    clocks.run(0.6, 1.9)  # the loop 60 % of a core, the process 95 % of its two cores
    assert busy() is True
    clocks.run(0.6, 1.5)  # the process 75 %: CPU to spare
    assert busy() is False
    clocks.run(0.05, 2.0)  # a model computing on both cores while the loop idles
    assert busy() is False
