"""Process workers: one worker process per device, batches through shared memory.

The GPU default: each process owns one GPU (CUDA_VISIBLE_DEVICES pinned), so a
TensorRT abort or an out-of-memory kill takes down one worker, not the server.
A worker that dies raises WorkerCrashed for its in-flight batch (the batcher runs
it again); one whose batch runs past its time limit is killed (WorkerHung); one
whose memory passes ``max_rss_mb`` is replaced between batches. Each is restarted
and warmed up before it takes work again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np

from batching import TimedOutputs
from server.core.vocabulary import Signature, example_inputs
from server.ipc.layout import layout_bytes, read_tensors, write_tensors
from server.runtime.backend import ModelLoadError, WorkerCrashed, WorkerHung, batch_timeout
from server.runtime.process_worker import create_block, fitted_block, release_block, worker_main
from server.runtime.spec import ModelSpec, WorkerSpec
from server.runtime.worker_messages import BatchDone, BatchFailed, FromWorker, LoadFailed, Ready, RunBatch, Stop

log = logging.getLogger(__name__)
_SPAWN = multiprocessing.get_context("spawn")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_devices(workers: WorkerSpec) -> list[str]:
    """Devices to start one worker on: model.yaml's, else every visible GPU, else N CPU workers."""
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


class _Worker:
    """One worker process and its two shared-memory blocks (inputs, outputs), both owned here."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.hung = False  # the watchdog killed it
        self.inputs: Any = None
        self.outputs: Any = create_block(1 << 20)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def release(self) -> None:
        release_block(self.inputs, unlink=True)
        release_block(self.outputs, unlink=True)
        self.inputs = self.outputs = None


class ProcessWorkerPool:
    """One process per device; ``run`` sends a batch to a live, free one.

    The batcher never sends more batches than there are workers; ``run`` waits only while
    a worker is being restarted.
    """

    mode = "process"

    def __init__(self, model: ModelSpec, workers: WorkerSpec) -> None:
        self.model = model
        self.workers = workers
        self.name = model.path.parent.name
        self.devices = process_devices(workers)
        self.device = ",".join(self.devices)
        self.instances = len(self.devices)
        self._workers = [_Worker(d) for d in self.devices]
        self._free: list[_Worker] = []
        self._restarted: asyncio.Future[None] | None = None  # resolved when a restarted worker is free again
        self._signature: Signature | None = None
        self.backend = "tensorflow"
        self.batch_sizes: tuple[int, ...] | None = None  # TF-TRT engines' sizes, when converted
        self._warmup_sizes: tuple[int, ...] = ()  # what a restarted worker runs before it takes work
        self._closed = False
        self._restarts: set[asyncio.Task[None]] = set()
        self._slowest_warmup: float | None = None
        self.on_worker_restart: Callable[[str], None] | None = None  # reason: crash | hang | rss

    @property
    def signature(self) -> Signature:
        assert self._signature is not None, "pool not started"
        return self._signature

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    @property
    def processes(self) -> list[tuple[str, int]]:
        """(process name, pid) of each worker started: the process series label them by it."""
        return [(w.process.name, w.process.pid) for w in self._workers if w.process and w.process.pid]

    async def start(self) -> None:
        try:
            await asyncio.gather(*(self._spawn(w) for w in self._workers))
        except BaseException:
            await self.close()
            raise
        self._free.extend(self._workers)

    async def warm_up(self, sizes: Sequence[int]) -> None:
        """Run every size on every worker; a restarted worker runs the same sizes before it takes work."""
        self._warmup_sizes = tuple(sizes)
        for worker in self._workers:
            await self._warm(worker)

    async def _warm(self, worker: _Worker) -> None:
        for size in self._warmup_sizes:
            started = time.perf_counter()
            await self._run_on(worker, example_inputs(self.signature, size))
            self._slowest_warmup = max(self._slowest_warmup or 0.0, time.perf_counter() - started)

    def _release(self, worker: _Worker) -> None:
        self._free.append(worker)
        self._wake()

    def _wake(self) -> None:
        """Let a ``run`` waiting for a free worker look again."""
        if self._restarted is not None and not self._restarted.done():
            self._restarted.set_result(None)

    async def _spawn(self, worker: _Worker) -> None:
        parent, child = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=worker_main, name=f"batchserve-worker-{worker.device}", daemon=True,
            args=(child, self.model, self.workers, worker.device),
        )
        process.start()
        child.close()
        if worker.conn is not None:
            worker.conn.close()
        worker.process, worker.conn, worker.hung = process, parent, False
        message = await self._receive(worker)
        if not isinstance(message, Ready):
            process.join(5)
            reason = message.reason if isinstance(message, LoadFailed) else repr(message)
            raise ModelLoadError(f"worker on {worker.device} could not load {self.model.path}: {reason}")
        self._signature, self.backend, self.batch_sizes = message

    async def _receive(self, worker: _Worker) -> FromWorker:
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
            with contextlib.suppress(EOFError, OSError):
                return worker.conn.recv()
        worker.process.join(1)
        raise WorkerCrashed(
            f"worker process for {self.name} on {worker.device} died "
            f"(exit code {worker.process.exitcode}); its batch failed and the worker is being restarted"
        )

    async def _live_worker(self) -> _Worker:
        """A free worker whose process is alive; one that died while idle is sent to restart."""
        while True:
            while not self._free:
                if self._closed:
                    raise WorkerCrashed(f"the worker pool for {self.name} is closed")
                if self._restarted is None or self._restarted.done():
                    self._restarted = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._restarted)
            worker = self._free.pop(0)
            if worker.process is not None and worker.process.is_alive():
                return worker
            log.error("worker on %s died while idle; restarting it", worker.device)
            self._schedule_restart(worker, "crash")

    def _schedule_restart(self, worker: _Worker, reason: str) -> None:
        if self._closed:
            return
        if self.on_worker_restart is not None:
            self.on_worker_restart(reason)
        task = asyncio.get_running_loop().create_task(self._restart(worker, stop_first=reason == "rss"))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _kill_hung(self, worker: _Worker, limit: float) -> None:
        log.error("a batch of %s on %s ran longer than %.1f s (batch_timeout_ms): killing its worker as hung",
                  self.name, worker.device, limit)
        worker.hung = True
        if worker.process is not None:
            worker.process.kill()

    def _over_memory(self, worker: _Worker) -> bool:
        limit = self.workers.max_rss_mb
        if limit is None or worker.pid is None:
            return False
        rss = resident_mb(worker.pid)
        if rss <= limit:
            return False
        log.warning("worker on %s holds %.0f MiB (max_worker_rss_mb=%g): replacing it between batches",
                    worker.device, rss, limit)
        return True

    async def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        worker = await self._live_worker()
        lost = True  # unless the worker answered, its state is unknown: replace it
        limit = batch_timeout(self.workers.batch_timeout_s, self._slowest_warmup)
        watchdog = asyncio.get_running_loop().call_later(limit, self._kill_hung, worker, limit)
        try:
            result = await self._run_on(worker, inputs)
            lost = False
            return result
        except WorkerCrashed as error:
            if worker.hung:
                raise WorkerHung(f"a batch of {self.name} on {worker.device} ran longer than "
                                 f"{limit:.1f} s (batch_timeout_ms): its worker was killed and is being "
                                 "restarted") from error
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
            watchdog.cancel()
            if lost:
                self._schedule_restart(worker, "hang" if worker.hung else "crash")
            elif self._over_memory(worker):
                self._schedule_restart(worker, "rss")
            else:
                self._release(worker)

    async def _run_on(self, worker: _Worker, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert worker.conn is not None
        worker.inputs = fitted_block(worker.inputs, layout_bytes(inputs))
        layout, objects = write_tensors(worker.inputs.buf, 0, inputs)
        try:
            worker.conn.send(RunBatch(worker.inputs.name, worker.outputs.name, layout, objects))
        except OSError:  # the process is gone: its pipe is broken
            await self._receive(worker)  # raises WorkerCrashed with its exit code
            raise
        reply = await self._receive(worker)
        if isinstance(reply, BatchFailed):
            raise RuntimeError(f"{reply.error_type}: {reply.text}")
        assert isinstance(reply, BatchDone), reply
        outputs = TimedOutputs({**read_tensors(worker.outputs.buf, reply.layout, copy=True), **reply.objects},
                               reply.seconds)
        worker.outputs = fitted_block(worker.outputs, reply.needed)
        return outputs

    async def _stop(self, worker: _Worker) -> None:
        """Ask the worker to exit after its batch in hand; killed if it has not within 10 s."""
        if worker.conn is not None:
            with contextlib.suppress(OSError):
                worker.conn.send(Stop())
        if worker.process is not None:
            await asyncio.get_running_loop().run_in_executor(None, worker.process.join, 10)
            if worker.process.is_alive():
                worker.process.kill()

    async def _restart(self, worker: _Worker, stop_first: bool = False) -> None:
        """Replace a dead (or, with stop_first, a live but retiring) worker, warm it up, then let it take work again."""
        if stop_first:
            await self._stop(worker)
        delay = 0.5
        while not self._closed:
            try:
                await self._spawn(worker)
                await self._warm(worker)
                log.info("worker on %s restarted (pid %s) and warmed up", worker.device, worker.pid)
                self._release(worker)
                return
            except Exception as exc:
                log.error("restarting the worker on %s failed: %s; retrying in %.1fs", worker.device, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        self._closed = True
        self._wake()
        for task in list(self._restarts):
            task.cancel()
        for worker in self._workers:
            await self._stop(worker)
            if worker.conn is not None:
                worker.conn.close()
            worker.release()
