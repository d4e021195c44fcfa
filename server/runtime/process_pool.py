"""Process workers: one worker process per device, batches through shared memory.

The GPU default: each process owns one GPU (CUDA_VISIBLE_DEVICES pinned), so a
TensorRT abort or an out-of-memory kill takes down one worker, not the server.
A worker that dies fails only its in-flight batch (WorkerCrashed, HTTP 503);
it is restarted and warmed up before it takes work again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import subprocess
from collections.abc import Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from ..model_config import ModelConfig
from ..settings import Settings
from ..vocabulary import Signature
from . import shm
from .backend import ModelLoadError, WorkerCrashed, warmup_inputs
from .process_worker import worker_main

log = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")


def process_devices(settings: Settings, configured: list[str] | None) -> list[str]:
    """Devices to start one worker on: model.yaml's, else every visible GPU, else N CPU workers."""
    if configured:
        return [d.lower().lstrip("/").replace("device:", "") for d in configured]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() not in ("", "-1"):
        return [f"gpu:{i}" for i in visible.split(",") if i.strip()]
    if visible is None and shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
        gpus = [line for line in listing.splitlines() if line.startswith("GPU ")]
        if gpus:
            return [f"gpu:{i}" for i in range(len(gpus))]
    return [f"cpu:{i}" for i in range(settings.process_devices)]


class _Worker:
    """One worker process and its two shared-memory blocks (inputs, outputs), both owned here."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.inputs: Any = None
        self.outputs: Any = shm.create(1 << 20)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def ensure_input_capacity(self, needed: int) -> None:
        if self.inputs is None or self.inputs.size < needed:
            shm.release(self.inputs, unlink=True)
            self.inputs = shm.create(max(needed, 1 << 20) * 2)

    def grow_outputs(self, needed: int) -> None:
        if needed > self.outputs.size:
            shm.release(self.outputs, unlink=True)
            self.outputs = shm.create(needed * 2)

    def release(self) -> None:
        shm.release(self.inputs, unlink=True)
        shm.release(self.outputs, unlink=True)
        self.inputs = self.outputs = None


class ProcessWorkerPool:
    """One process per device; ``run`` sends a batch to an idle one."""

    mode = "process"

    def __init__(self, path: Path, config: ModelConfig, settings: Settings, devices: list[str] | None = None) -> None:
        self.path = path
        self.config = config
        self.settings = settings
        self.devices = process_devices(settings, devices)
        self.instances = len(self.devices)
        self._workers = [_Worker(d) for d in self.devices]
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._signature: Signature | None = None
        self._backend = "tensorflow"
        self.batch_sizes: tuple[int, ...] | None = None  # TF-TRT engines' sizes, when converted
        self._closed = False
        self._restarts: set[asyncio.Task[None]] = set()
        self.restarts = 0

    @property
    def signature(self) -> Signature:
        assert self._signature is not None, "pool not started"
        return self._signature

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def device(self) -> str:
        return ",".join(self.devices)

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(self._spawn(w) for w in self._workers))
        except BaseException:
            await self.close()
            raise
        for worker in self._workers:
            self._idle.put_nowait(worker)

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=worker_main, name=f"batchserve-worker-{worker.device}", daemon=True,
            args=(child, str(self.path), self.config.model_dump(), self.settings.model_dump(mode="json"),
                  worker.device),
        )
        process.start()
        child.close()
        worker.process, worker.conn = process, parent
        message = await self._receive(worker)
        if message[0] != "ready":
            process.join(5)
            raise ModelLoadError(f"worker on {worker.device} could not load {self.path}: {message[1]}")
        _, self._signature, self._backend, self.batch_sizes = message

    async def _receive(self, worker: _Worker) -> Any:
        """The worker's next message, or WorkerCrashed if its process ends first."""
        assert worker.conn is not None and worker.process is not None
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        conn_fd, death_fd = worker.conn.fileno(), worker.process.sentinel

        def mark(what: str) -> None:
            if not ready.done():
                ready.set_result(what)

        loop.add_reader(conn_fd, mark, "message")
        loop.add_reader(death_fd, mark, "died")
        try:
            what = await ready
        finally:
            loop.remove_reader(conn_fd)
            loop.remove_reader(death_fd)
        if what == "message" or worker.conn.poll():
            try:
                return worker.conn.recv()
            except (EOFError, OSError):
                pass
        worker.process.join(1)
        raise WorkerCrashed(
            f"worker process for {self.path.parent.name} on {worker.device} died "
            f"(exit code {worker.process.exitcode}); its batch failed and the worker is being restarted"
        )

    async def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        worker = await self._idle.get()
        lost = True  # unless the worker answered, its state is unknown: replace it
        try:
            result = await self._run_on(worker, inputs)
            lost = False
            return result
        except WorkerCrashed:
            log.error("worker on %s died; restarting it", worker.device)
            raise
        except asyncio.CancelledError:
            if worker.process is not None:
                worker.process.kill()  # its late reply would be read as the next batch's
            raise
        except Exception:
            lost = False  # the model failed on this batch; the worker itself is fine
            raise
        finally:
            if not lost:
                self._idle.put_nowait(worker)
            elif not self._closed:
                task = asyncio.get_running_loop().create_task(self._restart(worker))
                self._restarts.add(task)
                task.add_done_callback(self._restarts.discard)

    async def _run_on(self, worker: _Worker, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert worker.conn is not None
        worker.ensure_input_capacity(shm.bytes_needed(inputs))
        layout, objects = shm.write(worker.inputs, inputs)
        worker.conn.send(("run", worker.inputs.name, worker.outputs.name, layout, objects))
        reply = await self._receive(worker)
        if reply[0] == "failed":
            _, kind, text, _ = reply
            raise RuntimeError(f"{kind}: {text}")
        _, out_layout, out_objects, needed = reply
        outputs = {**shm.read(worker.outputs, out_layout, copy=True), **out_objects}
        worker.grow_outputs(needed)
        return outputs

    async def _restart(self, worker: _Worker) -> None:
        """Replace a dead worker, warm it up, then let it take work again."""
        self.restarts += 1
        delay = 0.5
        while not self._closed:
            try:
                await self._spawn(worker)
                for size in self.config.warmup_plan(self.settings, self.instances, self.batch_sizes):
                    await self._run_on(worker, warmup_inputs(self.signature, size))
                log.info("worker on %s restarted (pid %s) and warmed up", worker.device, worker.pid)
                self._idle.put_nowait(worker)
                return
            except Exception as exc:
                log.error("restarting the worker on %s failed: %s; retrying in %.1fs", worker.device, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        self._closed = True
        for task in list(self._restarts):
            task.cancel()
        for worker in self._workers:
            if worker.conn is not None:
                try:
                    worker.conn.send(("stop",))
                except (OSError, BrokenPipeError):
                    pass
            if worker.process is not None:
                await asyncio.get_running_loop().run_in_executor(None, worker.process.join, 10)
                if worker.process.is_alive():
                    worker.process.kill()
            if worker.conn is not None:
                worker.conn.close()
            worker.release()
