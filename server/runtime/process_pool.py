"""Process workers: ``instances_per_device`` worker processes per device, batches through shared memory.

The GPU default: each process is pinned to one GPU (CUDA_VISIBLE_DEVICES), so a
TensorRT abort or an out-of-memory kill takes down one worker, not the server.
Several processes on one device each hold a batch of their own, so one's copies
and host work overlap another's compute. A worker that dies raises WorkerCrashed
for its in-flight batch (the batcher runs it again); one whose batch runs past its
time limit is killed (WorkerHung); one whose memory passes ``max_rss_mb`` is
replaced between batches. Each is restarted and warmed up on its own (the others
keep serving) before it takes work again.

Given a ``WorkerHome`` (``--frontends N``: the supervisor's), workers outlive their engine: a new engine's
pool adopts the live ones with their model loaded and warmed (server/runtime/worker_home.py) and starts only
those that are missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from batching import TimedOutputs
from server.core.vocabulary import Signature
from server.ipc.layout import layout_bytes, read_tensors, write_tensors
from server.observability.trace_context import BATCH
from server.runtime.backend import ModelLoadError, WorkerCrashed, WorkerHung, batch_timeout
from server.runtime.process_worker import fitted_block
from server.runtime.spec import ModelSpec, WorkerSpec
from server.runtime.warmup_data import WarmupBatch, WarmupResult, replay, warmup_batches
from server.runtime.worker_home import WorkerHome, stop_worker
from server.runtime.worker_launch import connect_worker, spawn_worker, worker_identity
from server.runtime.worker_messages import BatchDone, BatchFailed, FromWorker, LoadFailed, Ready, RunBatch, Stop, Warmed
from server.runtime.worker_slots import WorkerSlot, process_devices, resident_mb

log = logging.getLogger(__name__)


class ProcessWorkerPool:
    """``instances_per_device`` processes per device; ``run`` sends a batch to a live, free one, on the device
    with the fewest busy.

    The batcher never sends more batches than there are workers (``instances``); ``run`` waits only while
    a worker is being restarted.
    """

    mode = "process"

    def __init__(self, model: ModelSpec, workers: WorkerSpec, home: WorkerHome | None = None) -> None:
        self.model = model
        self.workers = workers
        self.home = home
        self.name = model.path.parent.name
        self.devices = process_devices(workers)
        self.device = ",".join(dict.fromkeys(self.devices))  # each device once
        per_device = workers.instances_per_device
        # Interleaved (gpu:0, gpu:1, gpu:0, ...), so the first free worker of an idle pool spreads over devices.
        self._workers = [WorkerSlot(d, i, per_device) for i in range(per_device) for d in self.devices]
        self.instances = len(self._workers)
        if per_device > 1 and not workers.gpu_memory_growth and any(d.startswith("gpu") for d in self.devices):
            log.warning("model %s: instances_per_device=%d with gpu_memory_growth off: each worker process "
                        "reserves nearly all of its GPU's free memory as it loads, leaving the next one on that GPU "
                        "little or none (it fails to load or runs out of memory); turn --gpu-memory-growth on",
                        self.name, per_device)
        self._free: list[WorkerSlot] = []
        self._restarted: asyncio.Future[None] | None = None  # resolved when a restarted worker is free again
        self._signatures: dict[str, Signature] = {}
        self.backend = "tensorflow"
        self.batch_sizes: tuple[int, ...] | None = None  # TF-TRT engines' sizes, when converted
        self._warmup: list[WarmupBatch] = []  # what a restarted worker runs before it takes work
        self._closed = False
        self._restarts: set[asyncio.Task[None]] = set()
        self._slowest_warmup: float | None = None
        self.on_worker_restart: Callable[[str], None] | None = None  # reason: crash | hang | rss
        self.adopted: list[int] = []  # pids of the workers adopted from the engine before, at start

    @property
    def signature(self) -> Signature:
        """The default signature (what a request without a signature name runs)."""
        assert self._signatures, "pool not started"
        return next(iter(self._signatures.values()))

    @property
    def signatures(self) -> dict[str, Signature]:
        """Every signature served, the default first."""
        return self._signatures

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    @property
    def processes(self) -> list[tuple[str, int]]:
        """(process name, pid) of each worker started: the process series label them by it."""
        return [(w.process_name, w.process.pid) for w in self._workers if w.process is not None]

    async def start(self) -> None:
        try:
            adopted = await asyncio.gather(*(self._adopt(w) for w in self._workers))
            missing = [w for w, ok in zip(self._workers, adopted, strict=True) if not ok]
            # With TF-TRT the first worker converts into the shared cache alone; the others then load what it wrote.
            waves = [missing[:1], missing[1:]] if self.model.tensorrt is not None else [missing]
            for wave in waves:
                await asyncio.gather(*(self._spawn(w) for w in wave))
        except BaseException:
            await self.close()
            raise
        self.adopted = [w.process.pid for w, ok in zip(self._workers, adopted, strict=True) if ok and w.process]
        if self.adopted:
            log.info("model %s: adopted %d of %d workers from the engine before, loaded and warm (pids %s)",
                     self.name, len(self.adopted), len(self._workers), self.adopted)
        self._free.extend(self._workers)

    async def warm_up(self, sizes: Sequence[int]) -> WarmupResult:
        """Run every warm-up batch (server/runtime/warmup_data.py) on every worker, but one adopted with these
        batches run; a restarted worker runs the same batches (those the model took) before it takes work."""
        self._warmup = await asyncio.to_thread(warmup_batches, self.model.warmup, self.signatures, sizes,
                                               self.signature.name)
        results = [await self._warm(worker) for worker in self._workers]
        return results[0]

    async def _warm(self, worker: WorkerSlot) -> WarmupResult:
        kept = WarmupResult.kept(worker.warmed, self._warmup)
        if kept is not None and worker.warmed is not None:  # adopted, warm
            self._slowest_warmup = max(self._slowest_warmup or 0.0, worker.warmed.slowest_s or 0.0)
            self._warmup = kept.ran
            return kept
        slowest = 0.0

        async def timed(batch: WarmupBatch) -> None:
            nonlocal slowest
            started = time.perf_counter()
            await self._run_on(worker, batch.inputs, batch.signature)
            slowest = max(slowest, time.perf_counter() - started)
            self._slowest_warmup = max(self._slowest_warmup or 0.0, slowest)

        result = await replay(self._warmup, timed, self.name)
        self._warmup = result.ran  # generated batches the model rejected are not tried again
        if worker.conn is not None:  # the next engine that adopts it need not warm it up again
            with contextlib.suppress(OSError):
                worker.conn.send(Warmed(result.record(slowest)))
        return result

    def _release(self, worker: WorkerSlot) -> None:
        self._free.append(worker)
        self._wake()

    def _wake(self) -> None:
        """Let a ``run`` waiting for a free worker look again."""
        if self._restarted is not None and not self._restarted.done():
            self._restarted.set_result(None)

    def _identity(self, worker: WorkerSlot) -> tuple[str, str]:
        return worker_identity(self.model, self.workers, worker.device, worker.instance)

    async def _adopt(self, worker: WorkerSlot) -> bool:
        """Take over a live worker of the engine before for this slot, with these settings and files."""
        if self.home is None:
            return False
        candidates = self.home.claim(*self._identity(worker))
        while candidates:
            path = candidates.pop()
            try:
                worker.attach(*connect_worker(path))
                message = await self._receive(worker)
            except (OSError, WorkerCrashed):
                stop_worker(path)
                continue
            if not isinstance(message, Ready):
                stop_worker(path)
                continue
            self._signatures, self.backend, self.batch_sizes, worker.warmed = message
            for other in candidates:  # more than one (a restart's worker beside a stuck one): keep one
                stop_worker(other)
            return True
        return False

    async def _spawn(self, worker: WorkerSlot) -> None:
        listen = self.home.listen_path(*self._identity(worker)) if self.home is not None else None
        supervisor = self.home.supervisor if self.home is not None else None
        worker.attach(*spawn_worker(self.model, self.workers, worker.device, worker.process_name, listen,
                                    supervisor))
        message = await self._receive(worker)
        if not isinstance(message, Ready):
            assert worker.process is not None
            worker.process.join(5)
            reason = message.reason if isinstance(message, LoadFailed) else repr(message)
            raise ModelLoadError(f"worker on {worker.where} could not load {self.model.path}: {reason}")
        self._signatures, self.backend, self.batch_sizes, _ = message

    async def _receive(self, worker: WorkerSlot) -> FromWorker:
        """The worker's next message, or WorkerCrashed if its process ends first."""
        assert worker.conn is not None and worker.process is not None
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        conn_fd, death_fd = worker.conn.fileno(), worker.process.sentinel

        def mark(what: str) -> None:
            if not ready.done():
                ready.set_result(what)

        loop.add_reader(conn_fd, mark, "message")
        if death_fd >= 0:  # else its death shows as the connection's end
            loop.add_reader(death_fd, mark, "died")
        try:
            what = await ready
        finally:
            loop.remove_reader(conn_fd)
            if death_fd >= 0:
                loop.remove_reader(death_fd)
        if what == "message" or worker.conn.poll():
            with contextlib.suppress(EOFError, OSError):
                return worker.conn.recv()
        worker.process.join(1)
        code = "adopted: its exit code is not known here" if worker.process.adopted else \
            f"exit code {worker.process.exitcode}"
        raise WorkerCrashed(
            f"worker process for {self.name} on {worker.where} died "
            f"({code}); its batch failed and the worker is being restarted"
        )

    async def _live_worker(self) -> WorkerSlot:
        """A free worker whose process is alive; one that died while idle is sent to restart."""
        while True:
            while not self._free:
                if self._closed:
                    raise WorkerCrashed(f"the worker pool for {self.name} is closed")
                if self._restarted is None or self._restarted.done():
                    self._restarted = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._restarted)
            worker = self._least_busy()
            if worker.process is not None and worker.process.is_alive():
                return worker
            log.error("worker on %s died while idle; restarting it", worker.where)
            self._schedule_restart(worker, "crash")

    def _least_busy(self) -> WorkerSlot:
        """Take a free worker on the device with the fewest workers busy (or restarting); among equals, the
        longest idle, so batches spread over devices and over each device's instances."""
        busy = Counter(w.device for w in self._workers)
        busy.subtract(w.device for w in self._free)
        worker = min(self._free, key=lambda w: busy[w.device])
        self._free.remove(worker)
        return worker

    def _schedule_restart(self, worker: WorkerSlot, reason: str) -> None:
        if self._closed:
            return
        if self.on_worker_restart is not None:
            self.on_worker_restart(reason)
        task = asyncio.get_running_loop().create_task(self._restart(worker, stop_first=reason == "rss"))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    def _kill_hung(self, worker: WorkerSlot, limit: float) -> None:
        log.error("a batch of %s on %s ran longer than %.1f s (batch_timeout_ms): killing its worker as hung",
                  self.name, worker.where, limit)
        worker.hung = True
        if worker.process is not None:
            worker.process.kill()

    def _over_memory(self, worker: WorkerSlot) -> bool:
        limit = self.workers.max_rss_mb
        if limit is None or worker.pid is None:
            return False
        rss = resident_mb(worker.pid)
        if rss <= limit:
            return False
        log.warning("worker on %s holds %.0f MiB (max_worker_rss_mb=%g): replacing it between batches",
                    worker.where, rss, limit)
        return True

    async def run(self, inputs: Mapping[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        worker = await self._live_worker()
        lost = True  # unless the worker answered, its state is unknown: replace it
        limit = batch_timeout(self.workers.batch_timeout_s, self._slowest_warmup)
        watchdog = asyncio.get_running_loop().call_later(limit, self._kill_hung, worker, limit)
        try:
            result = await self._run_on(worker, inputs, signature)
            lost = False
            return result
        except WorkerCrashed as error:
            if worker.hung:
                raise WorkerHung(f"a batch of {self.name} on {worker.where} ran longer than "
                                 f"{limit:.1f} s (batch_timeout_ms): its worker was killed and is being "
                                 "restarted") from error
            log.error("worker on %s died; restarting it", worker.where)
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

    async def _run_on(self, worker: WorkerSlot, inputs: Mapping[str, np.ndarray], signature: str | None = None
                      ) -> dict[str, np.ndarray]:
        assert worker.conn is not None
        worker.inputs = fitted_block(worker.inputs, layout_bytes(inputs))
        layout, objects = write_tensors(worker.inputs.buf, 0, inputs)
        try:
            worker.conn.send(RunBatch(worker.inputs.name, worker.outputs.name, layout, objects, signature, BATCH.get()))
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

    async def _stop(self, worker: WorkerSlot) -> None:
        """Ask the worker to exit after its batch in hand; killed if it has not within 10 s."""
        if worker.conn is not None:
            with contextlib.suppress(OSError):
                worker.conn.send(Stop())
        if worker.process is not None:
            await asyncio.get_running_loop().run_in_executor(None, worker.process.join, 10)
            if worker.process.is_alive():
                worker.process.kill()

    async def _restart(self, worker: WorkerSlot, stop_first: bool = False) -> None:
        """Replace a dead (or, with stop_first, a live but retiring) worker, warm it up, then let it take work again."""
        if stop_first:
            await self._stop(worker)
        delay = 0.5
        while not self._closed:
            try:
                await self._spawn(worker)
                await self._warm(worker)
                log.info("worker on %s restarted (pid %s) and warmed up", worker.where, worker.pid)
                self._release(worker)
                return
            except Exception as exc:
                log.error("restarting the worker on %s failed: %s; retrying in %.1fs", worker.where, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        self._closed = True
        self._wake()
        for task in list(self._restarts):
            task.cancel()
        for worker in self._workers:
            await self._stop(worker)
            for held in (worker.conn, worker.process):
                if held is not None:
                    held.close()
            worker.release()

