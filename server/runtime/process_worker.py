"""The body of one worker process: load the model on its device, then run batches until told to stop; and the
shared-memory blocks batches pass through (the pool's: it creates, grows and unlinks them; a worker attaches).

Runs in a freshly spawned interpreter (never forked from a process that holds
TensorFlow state). CUDA_VISIBLE_DEVICES is set before TensorFlow is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from multiprocessing import current_process, shared_memory
from multiprocessing.connection import Connection

from server.ipc.layout import ALIGN, layout_bytes, read_tensors, write_tensors
from server.observability.logs import configure_inherited, worker_index
from server.observability.tracing import computed
from server.runtime.spec import ModelSpec, WorkerSpec
from server.runtime.worker_messages import BatchDone, BatchFailed, LoadFailed, Ready, RunBatch, ToWorker

log = logging.getLogger(__name__)


def worker_main(conn: Connection, model_spec: ModelSpec, worker_spec: WorkerSpec, device: str) -> None:
    name, version = model_spec.path.parent.name, model_spec.path.name
    configure_inherited("worker", worker_index(name, version, current_process().name))
    kind, _, index = device.partition(":")
    os.environ["CUDA_VISIBLE_DEVICES"] = index if kind == "gpu" else ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if worker_spec.cores:  # before TensorFlow sizes its thread pools from the cores it may use
        try:
            os.sched_setaffinity(0, worker_spec.cores)
        except (OSError, ValueError) as exc:
            conn.send(LoadFailed(f"cannot run on worker_cores {list(worker_spec.cores)}: {exc}"))
            return
    try:
        from server.runtime.loading import load_model

        if model_spec.needs_tensorflow:
            from server.runtime.tf_setup import configure_tensorflow

            configure_tensorflow(worker_spec.tf_intra_op_threads, worker_spec.tf_inter_op_threads,
                                 worker_spec.gpu_memory_growth)
        model = load_model(model_spec, "/GPU:0" if kind == "gpu" else "/CPU:0")
    except BaseException as exc:
        conn.send(LoadFailed(f"{type(exc).__name__}: {exc}"))
        return
    conn.send(Ready(model.signatures, model.backend, model.batch_sizes))
    log.info("worker for %s/%s on %s loaded", name, version, device)
    in_block = out_block = None
    while True:
        try:
            message: ToWorker = conn.recv()
        except EOFError:
            return
        if not isinstance(message, RunBatch):  # Stop
            return
        try:
            if in_block is None or in_block.name != message.inputs:
                release_block(in_block, unlink=False)
                in_block = attach_block(message.inputs)
            inputs = {**read_tensors(in_block.buf, message.layout), **message.objects}
            started = time.perf_counter()
            outputs = model.run(inputs, message.signature)
            seconds = time.perf_counter() - started
            if message.trace is not None:
                computed(message.trace, seconds, inputs, worker=True)
            if out_block is None or out_block.name != message.outputs:
                release_block(out_block, unlink=False)
                out_block = attach_block(message.outputs)
            needed = layout_bytes(outputs)
            if needed <= out_block.size:
                conn.send(BatchDone(*write_tensors(out_block.buf, 0, outputs), needed, seconds))
            else:  # too big for the block this time: pickled, and the parent grows the block
                conn.send(BatchDone([], outputs, needed, seconds))
        except Exception as exc:
            conn.send(BatchFailed(type(exc).__name__, str(exc), traceback.format_exc(limit=3)))


def attach_block(name: str) -> shared_memory.SharedMemory:
    """Open a block the parent created. Spawned workers share the parent's resource tracker,
    so the (Python < 3.13) registration on attach is the parent's own entry and needs no undoing."""
    return shared_memory.SharedMemory(name=name)


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
