"""``process_*`` series of every process of the server, each labelled with its ``role`` and ``index``.

The names and meanings are prometheus_client's ``ProcessCollector``'s (read from ``/proc`` when scraped),
plus ``process_threads`` (the Rust client's name). The registry is batchserve's own, so nothing exports them
unless this collector does; and since one process answers a scrape for all of them, every series carries
the process it describes:

- ``role="server"``: the one process of ``--frontends 1``;
- ``role="supervisor"``, ``role="engine"`` (index "0"), ``role="frontend"`` (index N) with ``--frontends N``;
- ``role="worker"``: a process worker, index ``model/version/device`` (with several instances per device, its
  instance number too: ``spam/1/gpu:0-1``), as its log lines name it.

The process that holds the models reports them all (the engine knows every front end and the supervisor
from their connections): the merge rule of server/observability/merge.py then passes them through
unchanged, since no two processes' series share labels. Nothing is read on the request path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.models.catalog import ModelCatalog
from server.observability.logs import process_role, worker_index

ProcessRef = tuple[str, str, int]  # role, index, pid
Source = Callable[[], Iterable[ProcessRef]]
LABELS = ["role", "index"]
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# name -> (help, counter?): prometheus_client's ProcessCollector's, and process_threads
SERIES = {
    "process_cpu_seconds_total": ("Total user and system CPU time spent in seconds.", True),
    "process_resident_memory_bytes": ("Resident memory size in bytes.", False),
    "process_virtual_memory_bytes": ("Virtual memory size in bytes.", False),
    "process_start_time_seconds": ("Start time of the process since unix epoch in seconds.", False),
    "process_open_fds": ("Number of open file descriptors.", False),
    "process_max_fds": ("Maximum number of open file descriptors.", False),
    "process_threads": ("Number of OS threads in the process.", False),
}


def _boot_time() -> float:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return 0.0


_BOOT = _boot_time()


def read_process(pid: int) -> dict[str, float]:
    """The series' values for ``pid`` from /proc (empty when it is gone or /proc cannot say)."""
    if not _BOOT:
        return {}
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()  # after the command's name
        values = {"process_cpu_seconds_total": (int(stat[11]) + int(stat[12])) / _TICKS,
                  "process_threads": float(stat[17]),
                  "process_start_time_seconds": int(stat[19]) / _TICKS + _BOOT,
                  "process_virtual_memory_bytes": float(stat[20]),
                  "process_resident_memory_bytes": float(stat[21]) * _PAGE}
        values["process_open_fds"] = float(len(os.listdir(f"/proc/{pid}/fd")))
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                values["process_max_fds"] = float(line.split()[3])
    except (OSError, IndexError, ValueError):
        return {}
    return values


class ProcessSeries(Collector):
    """This process (by its logging role) and every process its ``sources`` name, read when scraped."""

    def __init__(self) -> None:
        self.sources: list[Source] = []

    def add(self, source: Source) -> None:
        self.sources.append(source)

    def processes(self) -> Iterator[ProcessRef]:
        yield (*process_role(), os.getpid())
        for source in self.sources:
            yield from source()

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            name: (CounterMetricFamily if counter else GaugeMetricFamily)(name, text, labels=LABELS)
            for name, (text, counter) in SERIES.items()}
        for role, index, pid in self.processes():
            for name, value in read_process(pid).items():
                families[name].add_metric([role, index], value)
        yield from families.values()


def parent(role: str) -> Source:
    """The process that started this one (read now, so the source stops naming it once it is gone)."""
    pid = os.getppid()
    return lambda: [(role, "0", pid)] if os.getppid() == pid else []


def worker_processes(catalog: ModelCatalog) -> Source:
    """The worker processes of every version in ``catalog`` (its pool's ``processes``, where it has them)."""

    def source() -> Iterator[ProcessRef]:
        for name in catalog.names():
            for mv in catalog.versions(name):
                for process_name, pid in getattr(mv.pool, "processes", ()):
                    yield "worker", worker_index(name, mv.version, process_name), pid

    return source
