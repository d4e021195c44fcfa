"""The synthetic backend: a model with a latency model and fault injection, and no TensorFlow.

It measures the server itself (the model costs only what it is told to, and
sleeps rather than computes, as a GPU frees the CPU) and drives the fault
tests. Each output row is the sum of the first value of the row in each numeric
input, broadcast to the output's shape, so a test can check that every request
got its own rows back; it reads one value a row, so its CPU cost stays negligible.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import time
from collections.abc import Mapping

import numpy as np

from server.core.vocabulary import Signature
from server.runtime.backend import choose_signatures
from server.runtime.spec import SyntheticSpec
from server.runtime.worker_launch import WORKER_PREFIX


class SyntheticError(RuntimeError):
    """The injected ``error_rate`` failure."""


class SyntheticModel:
    backend = "synthetic"

    def __init__(self, spec: SyntheticSpec, device: str = "/CPU:0", signature_name: str | None = None,
                 signatures: tuple[str, ...] = ()) -> None:
        self.spec = spec
        self.device = device
        available = {sig.name: sig for sig in (spec.signature, *spec.more_signatures)}
        names = choose_signatures(sorted(available), signature_name or spec.signature.name, signatures,
                                  "the synthetic model")
        self.signatures: dict[str, Signature] = {name: available[name] for name in names}
        self.signature: Signature = self.signatures[names[0]]
        self.batch_sizes: tuple[int, ...] | None = None
        self._random = random.Random(0)
        self._in_worker_process = multiprocessing.current_process().name.startswith(WORKER_PREFIX)
        self._leaked: list[np.ndarray] = []

    def run(self, inputs: Mapping[str, np.ndarray], signature: str | None = None) -> dict[str, np.ndarray]:
        spec = self.spec
        if spec.gate_path is not None and os.path.exists(spec.gate_path):
            # Tell a test that a batch waits at the gate, and in which process.
            markers = (spec.gate_path + ".held", f"{spec.gate_path}.held.{os.getpid()}")
            for marker in markers:
                open(marker, "w").close()
            while os.path.exists(spec.gate_path):
                time.sleep(0.002)
            for marker in markers:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(marker)
        rows = next(iter(inputs.values())).shape[0]
        numeric = [a for a in inputs.values() if a.dtype != object]
        if spec.crash_on_value is not None and any((a == spec.crash_on_value).any() for a in numeric):
            if self._in_worker_process:
                os._exit(70)  # what a segfaulting kernel looks like from outside
            raise SyntheticError("synthetic crash (crash_on_value) in a thread worker")
        if spec.hang_on_value is not None and any((a == spec.hang_on_value).any() for a in numeric):
            time.sleep(3600)
        if spec.hang_path is not None and os.path.exists(spec.hang_path):
            with contextlib.suppress(FileNotFoundError):
                os.remove(spec.hang_path)
                time.sleep(3600)  # only the batch that removed the file hangs
        if spec.leak_mb_per_batch:
            self._leaked.append(np.ones(int(spec.leak_mb_per_batch * 2**20), dtype=np.uint8))
        if spec.error_rate and self._random.random() < spec.error_rate:
            raise SyntheticError("synthetic failure (error_rate)")
        delay = (spec.base_ms + spec.per_row_ms * rows) / 1000.0
        if delay > 0:
            time.sleep(delay)
        row_sum = np.zeros(rows, dtype=np.float64)
        for arr in numeric:
            row_sum += arr.reshape(rows, -1)[:, 0]
        outputs: dict[str, np.ndarray] = {}
        for name, out in self.signatures[signature or self.signature.name].outputs.items():
            shape = (rows, *(1 if d == -1 else d for d in out.shape[1:]))
            per_row = row_sum.reshape((rows,) + (1,) * (len(shape) - 1))
            if out.is_string:
                text = np.array([repr(float(v)).encode() for v in row_sum], dtype=object).reshape(per_row.shape)
                outputs[name] = np.empty(shape, dtype=object)
                outputs[name][...] = text
            else:
                outputs[name] = np.broadcast_to(per_row, shape).astype(out.dtype)
        return outputs
