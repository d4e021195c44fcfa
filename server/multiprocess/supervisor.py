"""``batchserve serve --frontends N``: N front-end processes sharing the port around one model engine.

The supervisor holds the port (bound with SO_REUSEPORT, never listening) so
each front end binds the same address and the kernel spreads connections over
them; the gRPC port and ``--metrics-port`` are held and shared the same way. It
restarts a front end or the engine that dies, and on SIGTERM stops the front
ends first (each finishes the requests it accepted, which needs the engine: one
that dies meanwhile is still replaced), then the engine (which drains its queues).

Process workers live in its work directory's ``workers/`` and outlive an engine that
dies, so the next engine adopts them loaded and warm (server/runtime/worker_home.py).
The supervisor is their subreaper: an engine's orphaned workers become its children,
which it reaps, and it stops any that are left once the last engine has stopped.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server.admission.auth import TokenFile
from server.ipc.arena import SHM_DIR, remove_leftovers
from server.runtime.worker_home import stop_all
from server.settings import Settings

log = logging.getLogger(__name__)


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return cores
    return cores if quota == "max" else max(1, min(cores, math.ceil(int(quota) / int(period))))


def frontend_count(settings: Settings) -> int:
    """``frontends`` as a number: ``auto`` is the cores left after the engine's (at least one)."""
    if settings.frontends == "auto":
        return max(1, usable_cores() - 1)
    return int(settings.frontends)


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) that other processes of this user may bind too (SO_REUSEPORT).

    Bound but not listening: the supervisor's holds the port and gets no connections; a front end's
    starts listening when uvicorn serves on it, after the engine's first load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.auth_tokens_file is not None:
            TokenFile(settings.auth_tokens_file)  # a bad file stops the start here, not each front end in turn
        self.count = frontend_count(settings)
        self.workdir = Path(tempfile.mkdtemp(prefix="batchserve-"))
        self.socket_path = str(self.workdir / "engine.sock")
        self.workers_dir = self.workdir / "workers"
        self.workers_dir.mkdir(mode=0o700)
        self.metrics_dir = self.workdir / "metrics"
        self.metrics_dir.mkdir()
        self.shm_prefix = f"batchserve-{os.getpid()}-"
        self.reservation = reuseport_socket(settings.host, settings.port)
        self.port = self.reservation.getsockname()[1]
        # the gRPC port is held the same way: the front ends' grpc.aio servers bind it with SO_REUSEPORT
        self.grpc_reservation = reuseport_socket(settings.host, settings.grpc_port) if settings.grpc_port else None
        # and --metrics-port: every front end serves the merged /metrics on it, so a scrape survives any one of them
        self.metrics_reservation = (reuseport_socket(settings.host, settings.metrics_port)
                                    if settings.metrics_port is not None else None)
        self.metrics_port = self.metrics_reservation.getsockname()[1] if self.metrics_reservation else None
        self.engine: subprocess.Popen[bytes] | None = None
        self.frontends: dict[int, subprocess.Popen[bytes]] = {}
        self.engine_restarts = 0  # engines that stopped and were replaced (each new engine exposes the count)
        self._stopping = False

    def _start(self, role: str, index: int = 0) -> subprocess.Popen[bytes]:
        settings = self.settings.model_copy(update={"port": self.port, "metrics_port": self.metrics_port})
        env = dict(os.environ)
        if role == "frontend":
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_dir)
        args = [sys.executable, "-m", "server.multiprocess.process_main", role,
                "--settings", settings.model_dump_json(),
                "--socket", self.socket_path, "--shm-prefix", self.shm_prefix, "--index", str(index),
                "--restarts", str(self.engine_restarts), "--workers-dir", str(self.workers_dir)]
        return subprocess.Popen(args, env=env)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        if self.settings.auth_tokens_file is not None:
            signal.signal(signal.SIGHUP, self._reload_tokens)
        log.info("batchserve on %s:%d: %d front ends around one model engine", self.settings.host, self.port,
                 self.count)
        if self.metrics_port is not None:
            log.info("/metrics of every process also on %s:%d (--metrics-port)", self.settings.host, self.metrics_port)
        become_subreaper()
        self.engine = self._start("engine")
        for index in range(self.count):
            self.frontends[index] = self._start("frontend", index)
        try:
            while not self._stopping:
                self._reap()
                self._replace_dead()
                time.sleep(0.05)
            self._shutdown()
        finally:
            for reservation in (self.reservation, self.grpc_reservation, self.metrics_reservation):
                if reservation is not None:
                    reservation.close()
            if stopped := stop_all(self.workers_dir):
                log.warning("stopped %d model worker(s) that no engine stopped", stopped)
            remove_leftovers(self.shm_prefix)
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 0

    def _stop(self, *_: object) -> None:
        self._stopping = True

    def _reload_tokens(self, *_: object) -> None:
        """SIGHUP: every front end reads the tokens file again."""
        for process in self.frontends.values():
            if process.poll() is None:
                process.send_signal(signal.SIGHUP)

    def _reap(self) -> None:
        """Reap every child that has exited: an engine's orphaned workers too (whose parent it now is); a front
        end's or the engine's status is kept for its ``poll``."""
        ours = {p.pid: p for p in (self.engine, *self.frontends.values()) if p is not None}
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in ours and ours[pid].returncode is None:
                ours[pid].returncode = os.waitstatus_to_exitcode(status)

    def _replace_dead(self) -> None:
        for index, process in list(self.frontends.items()):
            if process.poll() is not None and not self._stopping:
                log.error("front end %d (pid %d) exited with %s; starting a new one", index, process.pid,
                          process.returncode)
                self._forget(process.pid)
                self.frontends[index] = self._start("frontend", index)
        self._replace_dead_engine()

    def _replace_dead_engine(self) -> None:
        assert self.engine is not None
        code = self.engine.poll()
        if code is not None and not (self._stopping and code == 0):  # (stopped by a signal to the group: done)
            log.error("model engine (pid %d) exited with %s; starting a new one", self.engine.pid,
                      self.engine.returncode)
            remove_leftovers(f"{self.shm_prefix}out-")
            self.engine_restarts += 1
            self.engine = self._start("engine")

    def _forget(self, pid: int) -> None:
        """A dead front end's live gauges go; its counters stay in the totals. Its arena is removed."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))
        for path in SHM_DIR.glob(f"{self.shm_prefix}in-*-{pid}"):
            path.unlink(missing_ok=True)

    def _shutdown(self) -> None:
        """Front ends first (they answer what they accepted), then the engine (it drains its queues)."""
        grace = self.settings.drain_timeout_s + 10
        for process in self.frontends.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        until = time.monotonic() + grace
        while any(process.poll() is None for process in self.frontends.values()) and time.monotonic() < until:
            self._replace_dead_engine()  # requests a front end holds for a restarting engine still get it
            time.sleep(0.05)
        for process in self.frontends.values():
            _wait(process, 0)
        if self.engine is not None and self.engine.poll() is None:
            self.engine.send_signal(signal.SIGTERM)
            _wait(self.engine, grace)
        log.info("batchserve stopped: every accepted request answered")


def become_subreaper() -> bool:
    """Make this process the parent of its descendants' orphans (Linux), as it is as a container's PID 1."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def _wait(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
