"""Starting a process worker, reaching one that is already running, and a handle on either.

A worker is its own program (``python -m server.runtime.worker_process``) in a session of its own, never a
daemonic child: it is told what to load over its stdin and talks to its pool over a Unix socket. With a
``listen`` path it also listens there, so it can outlive its engine and be adopted by the next one
(server/runtime/worker_home.py); without one it exits when its first connection closes, as a child would.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from server.runtime.spec import ModelSpec, WorkerSpec

WORKER_MODULE = "server.runtime.worker_process"
WORKER_PREFIX = "batchserve-worker-"  # a worker's process name: this, then DEVICE[-INSTANCE]


@dataclass(frozen=True)
class WorkerLaunch:
    """What a worker process is started with (pickled to its stdin)."""

    model: ModelSpec
    workers: WorkerSpec
    device: str
    name: str  # batchserve-worker-DEVICE[-INSTANCE]: its log index and process series label
    conn_fd: int  # its end of the first engine's connection
    listen: str | None = None  # where it listens for later engines (None: it exits with its first)
    supervisor: int | None = None  # a worker between engines exits once this process is gone
    orphan_timeout_s: float = 120.0  # ... or once no engine has adopted it for this long


def worker_identity(model: ModelSpec, workers: WorkerSpec, device: str, instance: int) -> tuple[str, str]:
    """(slot, digest): the slot is the version's path, device and instance; the digest is everything the worker
    was started with (the model's files' stamps too), so changed settings or files never adopt an old worker."""
    slot = hashlib.sha256(f"{model.path}|{device}|{instance}".encode()).hexdigest()[:12]
    files = [model.path / name for name in ("saved_model.pb", "saved_model.pbtxt", "variables/variables.index")]
    stamps = [(str(f), s.st_mtime_ns, s.st_size) for f in files if (s := _stat(f)) is not None]
    digest = hashlib.sha256(repr((model, workers, stamps)).encode()).hexdigest()[:12]
    return slot, digest


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


class WorkerProcess:
    """A worker process, started here (``popen``) or adopted from an engine before. ``sentinel`` (a pidfd, -1
    where the kernel has none: before Linux 5.3) is readable once it has exited, whoever its parent is; without
    one, a worker's death shows as the end of its connection."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None) -> None:
        self.pid = pid
        self._popen = popen
        try:
            self.sentinel = os.pidfd_open(pid)
        except (AttributeError, OSError) as error:
            if isinstance(error, ProcessLookupError):
                raise
            self.sentinel = -1

    @property
    def adopted(self) -> bool:
        return self._popen is None

    @property
    def exitcode(self) -> int | None:
        """Its exit status (None while it runs, and for an adopted worker: not this process's child)."""
        return self._popen.poll() if self._popen is not None else None

    def is_alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        if self.sentinel >= 0:
            return not select.select([self.sentinel], [], [], 0)[0]
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for it to exit (and reap it when it is this process's child)."""
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout)
        elif self.sentinel >= 0:
            select.select([self.sentinel], [], [], timeout)
        else:
            until = time.monotonic() + timeout
            while self.is_alive() and time.monotonic() < until:
                time.sleep(0.01)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            if self.sentinel >= 0:
                signal.pidfd_send_signal(self.sentinel, signal.SIGKILL)
            elif self._popen is not None:
                self._popen.kill()
            else:
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Forget it (its pidfd); a child of this process is reaped first when it has exited."""
        if self._popen is not None:
            self._popen.poll()
        if self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1


def spawn_worker(model: ModelSpec, workers: WorkerSpec, device: str, name: str, listen: str | None = None,
                 supervisor: int | None = None) -> tuple[WorkerProcess, Connection]:
    """Start a worker process in a session of its own; its connection is the first message it sends on."""
    ours, theirs = socket.socketpair()
    launch = WorkerLaunch(model, workers, device, name, theirs.fileno(), listen, supervisor)
    # The worker imports this server from where this process does (it is not forked from it).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with theirs:
        popen = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, name], stdin=subprocess.PIPE,
                                 pass_fds=(theirs.fileno(),), start_new_session=True, env=env)
    assert popen.stdin is not None
    with contextlib.suppress(OSError), popen.stdin:  # one that dies at once is found dead by its first read
        popen.stdin.write(pickle.dumps(launch))
    return WorkerProcess(popen.pid, popen), Connection(ours.detach())


def connect_worker(path: Path) -> tuple[WorkerProcess, Connection]:
    """The worker listening at ``path`` and a connection to it (OSError when none is)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)  # a full backlog would block (never seen: the worker takes one at a time)
        sock.connect(str(path))
        sock.setblocking(True)
        pid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        process = WorkerProcess(pid)
    except OSError:
        sock.close()
        raise
    return process, Connection(sock.detach())
