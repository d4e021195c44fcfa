"""What the runtime is asked to load, as plain values.

The repository turns settings and model.yaml into these once; the runtime never
reads ``Settings`` or ``ModelConfig``, and the values pickle to worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from server.core.vocabulary import Signature


@dataclass(frozen=True)
class TensorRTSpec:
    """Convert at load with TF-TRT: engines for exactly these batch sizes."""

    precision: str
    batch_sizes: tuple[int, ...]


@dataclass(frozen=True)
class SyntheticSpec:
    """A model that sleeps ``base_ms + per_row_ms * rows`` per batch instead of computing (as a GPU frees the CPU).

    Faults for tests: a batch holding ``crash_on_value`` in any numeric input kills its worker process,
    one holding ``hang_on_value`` never returns, and ``error_rate`` of batches raise. While the file
    ``gate_path`` exists, a batch waits before it runs (tests hold the model with it to order events),
    and the file ``gate_path + ".held"`` exists while one waits (from when the first waits until one leaves),
    ``gate_path + ".held.PID"`` while one waits in process PID.
    The next batch to find the file ``hang_path`` deletes it and never returns (a kernel stuck once);
    every batch keeps ``leak_mb_per_batch`` more memory (a leak, for worker recycling).
    """

    signature: Signature  # the default one (the model's only one unless ``more_signatures``)
    base_ms: float = 0.0
    per_row_ms: float = 0.0
    crash_on_value: float | None = None
    hang_on_value: float | None = None
    error_rate: float = 0.0
    gate_path: str | None = None
    hang_path: str | None = None
    leak_mb_per_batch: float = 0.0
    more_signatures: tuple[Signature, ...] = ()


@dataclass(frozen=True)
class WarmupSource:
    """The files a version's real warm-up data comes from (None: absent; server/runtime/warmup_data.py)."""

    records: Path | None = None  # TF Serving's assets.extra/tf_serving_warmup_requests, when the version has it
    examples: Path | None = None  # model.yaml's warmup_examples, resolved


@dataclass(frozen=True)
class ModelSpec:
    """One model version to load: the signatures to serve (empty: all) over one load, and the default one
    (None: ``serving_default`` where the model has it, else the first served)."""

    path: Path
    signature_name: str | None = None
    signatures: tuple[str, ...] = ()
    tensorrt: TensorRTSpec | None = None
    synthetic: SyntheticSpec | None = None
    warmup: WarmupSource = WarmupSource()  # the files of real warm-up data (none: generated inputs)

    @property
    def needs_tensorflow(self) -> bool:
        return self.synthetic is None


@dataclass(frozen=True)
class WorkerSpec:
    """Where and how the instances of a version run."""

    mode: Literal["thread", "process"] = "thread"
    devices: tuple[str, ...] = ()  # empty: every visible GPU, else the CPU
    instances_per_device: int = 1
    process_devices: int = 1  # worker processes on a CPU-only host (process mode)
    tf_intra_op_threads: int = 0
    tf_inter_op_threads: int = 0
    gpu_memory_growth: bool = True
    batch_timeout_s: float | None = None  # a longer batch is a hang (None: from the warm-up timings)
    max_rss_mb: float | None = None  # a process worker above this is replaced between batches
    cores: tuple[int, ...] = ()  # process workers run on these CPU cores (empty: the server's)
