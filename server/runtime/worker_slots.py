"""Where a version's process workers run: its devices, a slot per worker (its process, connection and blocks),
and what a worker process holds (resident memory)."""

from __future__ import annotations

import os
import shutil
import subprocess
from multiprocessing.connection import Connection
from typing import Any

from server.runtime.process_worker import create_block, release_block
from server.runtime.spec import WorkerSpec
from server.runtime.worker_launch import WORKER_PREFIX, WorkerProcess
from server.runtime.worker_messages import WarmupRecord

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_devices(workers: WorkerSpec) -> list[str]:
    """Devices to start ``instances_per_device`` workers on: model.yaml's, else every visible GPU, else
    ``process_devices`` CPU devices (cpu:0..N-1, which share the cores that ``worker_cores`` names)."""
    if workers.devices:
        return [d.lower().lstrip("/").replace("device:", "") for d in workers.devices]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        return [f"gpu:{i}" for i in visible.split(",") if i.strip()]
    if visible is None and shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        gpus = [line for line in listing.splitlines() if line.startswith("GPU ")]
        if gpus:
            return [f"gpu:{i}" for i in range(len(gpus))]
    return [f"cpu:{i}" for i in range(workers.process_devices)]


def resident_mb(pid: int) -> float:
    """The process's resident set in MiB (0 where /proc cannot say)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


class WorkerSlot:
    """One worker of a pool: its process (started or adopted), its connection, and its two shared-memory blocks
    (inputs, outputs), both owned by the pool."""

    def __init__(self, device: str, instance: int, per_device: int) -> None:
        self.device = device
        self.instance = instance
        self.where = device if per_device == 1 else f"{device} (instance {instance})"  # for messages
        self.process_name = f"{WORKER_PREFIX}{device}" + (f"-{instance}" if per_device > 1 else "")
        self.process: WorkerProcess | None = None
        self.conn: Connection | None = None
        self.hung = False  # the watchdog killed it
        self.warmed: WarmupRecord | None = None  # an adopted worker's warm-up, as it told
        self.inputs: Any = None
        self.outputs: Any = create_block(1 << 20)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def attach(self, process: WorkerProcess, conn: Connection) -> None:
        """Take ``process`` (started or adopted) as this slot's worker; the one before is forgotten."""
        for old in (self.conn, self.process):
            if old is not None:
                old.close()
        self.process, self.conn, self.hung, self.warmed = process, conn, False, None

    def release(self) -> None:
        release_block(self.inputs, unlink=True)
        release_block(self.outputs, unlink=True)
        self.inputs = self.outputs = None
