"""The body of one worker process: load the model on its device, then run batches until told to stop; and the
shared-memory blocks batches pass through (the pool's: it creates, grows and unlinks them; a worker attaches).

A program of its own (``python -m server.runtime.worker_process``, started by server/runtime/worker_launch.py):
never forked from a process that holds TensorFlow state, and CUDA_VISIBLE_DEVICES is set before TensorFlow is
imported. Started with a place to listen, it outlives its engine: when the engine's connection closes it waits
for the next engine to adopt it (server/runtime/worker_adoption.py) and serves that one with the same model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from multiprocessing import current_process, shared_memory
from multiprocessing.connection import Connection

from server.ipc.arena import Arena
from server.ipc.layout import ALIGN, layout_bytes, read_tensors, write_tensors
from server.observability.logs import configure_inherited, worker_index
from server.observability.tracing import computed
from server.runtime.backend import Model
from server.runtime.worker_adoption import Adoption
from server.runtime.worker_launch import WorkerLaunch
from server.runtime.worker_messages import BatchDone, BatchFailed, LoadFailed, Ready, RunBatch, Stop, ToWorker, Warmed

log = logging.getLogger(__name__)


def worker_main(launch: WorkerLaunch) -> None:
    name, version = launch.model.path.parent.name, launch.model.path.name
    current_process().name = launch.name  # batchserve-worker-...: a synthetic model crashes its process for real
    configure_inherited("worker", worker_index(name, version, launch.name))
    first = Connection(launch.conn_fd)
    adoption = None
    if launch.listen:
        try:
            adoption = Adoption(launch.listen, launch.supervisor, launch.orphan_timeout_s)
        except OSError as error:  # e.g. a path longer than a Unix socket's (108 bytes): serve, but not outlive
            log.warning("worker for %s/%s on %s cannot listen at %s (%s): it exits with its engine", name, version,
                        launch.device, launch.listen, error)
    try:
        model = _load(launch, first)
        if model is None:
            return
        batches = _Batches(model, Ready(model.signatures, model.backend, model.batch_sizes))
        if adoption is not None:
            adoption.start(lambda: batches.ready)
        log.info("worker for %s/%s on %s loaded", name, version, launch.device)
        with contextlib.suppress(OSError):
            first.send(batches.ready)
        conn: Connection | None = first
        while conn is not None:
            lost = batches.serve(conn)
            conn.close()
            if not lost or adoption is None:  # told to stop, or it lives and dies with its engine
                return
            log.info("worker for %s/%s on %s lost its engine: waiting for the next one", name, version, launch.device)
            conn = adoption.next_engine()
            if conn is not None:
                log.info("worker for %s/%s on %s: a new engine connected", name, version, launch.device)
        log.info("worker for %s/%s on %s exits: no engine adopted it", name, version, launch.device)
    finally:
        if adoption is not None:
            adoption.close()


def _load(launch: WorkerLaunch, conn: Connection) -> Model | None:
    """The model loaded on the worker's device, or None once LoadFailed is sent."""
    kind, _, index = launch.device.partition(":")
    os.environ["CUDA_VISIBLE_DEVICES"] = index if kind == "gpu" else ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        if launch.workers.cores:  # before TensorFlow sizes its thread pools from the cores it may use
            os.sched_setaffinity(0, launch.workers.cores)
    except (OSError, ValueError) as exc:
        reason = f"cannot run on worker_cores {list(launch.workers.cores)}: {exc}"
    else:
        try:
            from server.runtime.loading import load_model

            if launch.model.needs_tensorflow:
                from server.runtime.tf_setup import configure_tensorflow

                configure_tensorflow(launch.workers.tf_intra_op_threads, launch.workers.tf_inter_op_threads,
                                     launch.workers.gpu_memory_growth)
            return load_model(launch.model, "/GPU:0" if kind == "gpu" else "/CPU:0")
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(OSError):
        conn.send(LoadFailed(reason))
    return None


class _Batches:
    """Runs one engine's batches at a time. What an engine that adopts the worker is told (``ready``: the model's
    description and the warm-up the engine before ran) and the blocks carry over from engine to engine."""

    def __init__(self, model: Model, ready: Ready) -> None:
        self.model = model
        self.ready = ready
        self.in_block: Arena | None = None
        self.out_block: Arena | None = None

    def serve(self, conn: Connection) -> bool:
        """Run ``conn``'s batches until it closes (True) or says Stop (False). A batch whose engine is gone is
        finished and its answer dropped: the front ends send its requests to the next engine."""
        while True:
            try:
                message: ToWorker = conn.recv()
            except (EOFError, OSError):
                return True
            if isinstance(message, Stop):
                return False
            if isinstance(message, Warmed):
                self.ready = self.ready._replace(warmed=message.record)
                continue
            try:
                conn.send(self._run(message))
            except OSError:
                return True

    def _run(self, message: RunBatch) -> BatchDone | BatchFailed:
        try:
            if self.in_block is None or self.in_block.name != message.inputs:
                self.in_block = Arena(message.inputs)
            inputs = {**read_tensors(self.in_block.buf, message.layout), **message.objects}
            started = time.perf_counter()
            outputs = self.model.run(inputs, message.signature)
            seconds = time.perf_counter() - started
            if message.trace is not None:
                computed(message.trace, seconds, inputs, worker=True)
            if self.out_block is None or self.out_block.name != message.outputs:
                self.out_block = Arena(message.outputs)
            needed = layout_bytes(outputs)
            if needed <= self.out_block.size:
                return BatchDone(*write_tensors(self.out_block.buf, 0, outputs), needed, seconds)
            return BatchDone([], outputs, needed, seconds)  # too big for the block this time: the parent grows it
        except Exception as exc:
            return BatchFailed(type(exc).__name__, str(exc), traceback.format_exc(limit=3))


def create_block(size: int) -> shared_memory.SharedMemory:
    return shared_memory.SharedMemory(create=True, size=max(ALIGN, size))


def release_block(block: shared_memory.SharedMemory | None, unlink: bool) -> None:
    if block is None:
        return
    with contextlib.suppress(FileNotFoundError, BufferError):
        block.close()
        if unlink:
            block.unlink()


def fitted_block(block: shared_memory.SharedMemory | None, needed: int) -> shared_memory.SharedMemory:
    """``block`` if it holds ``needed`` bytes, else a new one (twice that, at least 2 MiB) in its place."""
    if block is not None and block.size >= needed:
        return block
    release_block(block, unlink=True)
    return create_block(max(needed, 1 << 20) * 2)
