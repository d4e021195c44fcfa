"""Per-model ``model.yaml``: batching, runtime and version settings that override the global ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batching import BatchConfig, RaggedOutput
from server.core.vocabulary import Signature, TensorSpec, dtype_from_v2
from server.runtime import ModelSpec, SyntheticSpec, TensorRTSpec, WorkerSpec
from server.runtime.spec import WarmupSource
from server.runtime.warmup_data import EXAMPLE_SUFFIXES
from server.runtime.warmup_records import RECORDS_PATH
from server.settings import DEFAULT_SLO_RESERVE, Settings


class ModelConfigError(ValueError):
    """model.yaml is unreadable or holds an unknown key or a bad value; the message names it."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: the latest N, all, or a specific list (TF Serving's policies)."""

    kind: Literal["latest", "all", "specific"]
    latest: int = 1
    specific: tuple[int, ...] = ()

    def select(self, versions: list[int]) -> set[int]:
        if self.kind == "all":
            return set(versions)
        if self.kind == "specific":
            return set(versions) & set(self.specific)
        return set(sorted(versions)[-self.latest :])

    @classmethod
    def parse(cls, value: Any) -> VersionPolicy:
        """Accepts ``latest:2``, ``all``, ``specific:1,3``, or YAML's ``{latest: 2}``, ``{specific: [1, 3]}``."""
        if isinstance(value, VersionPolicy):
            return value
        if isinstance(value, str):
            kind, _, arg = value.partition(":")
            kind = kind.strip()
            if kind == "all" and not arg:
                return cls("all")
            if kind == "latest":
                value = {"latest": int(arg or 1)}
            elif kind == "specific":
                value = {"specific": [int(v) for v in arg.split(",") if v.strip()]}
        if isinstance(value, dict) and len(value) == 1:
            (kind, arg), = value.items()
            if kind == "latest" and isinstance(arg, int) and arg >= 1:
                return cls("latest", latest=arg)
            if kind == "specific" and isinstance(arg, list) and arg and all(isinstance(v, int) for v in arg):
                return cls("specific", specific=tuple(arg))
        raise ValueError(f"version_policy must be latest:N (N >= 1), all, or specific:[versions]; got {value!r}")


class _Keys(BaseModel):
    """Keys of model.yaml: an unknown one is an error."""

    model_config = ConfigDict(extra="forbid")


class TensorRTOptions(_Keys):
    precision: Literal["FP32", "FP16", "INT8"] = "FP16"
    batch_sizes: list[int] | None = None


class Optimization(_Keys):
    tensorrt: TensorRTOptions | None = None


class RaggedOutputConfig(_Keys):
    """An output whose ``output_axis`` follows the padded ``input_axis`` of ``source_input``."""

    source_input: str
    input_axis: int = 1
    output_axis: int = 1


class TensorConfig(_Keys):
    """One tensor of an inline signature: a KServe V2 datatype and a shape (-1 where dynamic, batch first)."""

    datatype: str
    shape: list[int]

    @field_validator("datatype")
    @classmethod
    def _datatype(cls, value: str) -> str:
        dtype_from_v2(value)  # ValueError names the accepted ones
        return value

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: list[int]) -> list[int]:
        if not value or value[0] != -1 or any(d < -1 or d == 0 for d in value):
            raise ValueError("must start with -1 (the batch) and hold dimensions >= 1 or -1")
        return value


class SignatureConfig(_Keys):
    inputs: dict[str, TensorConfig] = Field(min_length=1)
    outputs: dict[str, TensorConfig] = Field(min_length=1)

    def signature(self, name: str = "serving_default") -> Signature:
        def specs(tensors: dict[str, TensorConfig]) -> dict[str, TensorSpec]:
            return {n: TensorSpec(n, dtype_from_v2(t.datatype), tuple(t.shape)) for n, t in sorted(tensors.items())}

        return Signature(name, specs(self.inputs), specs(self.outputs))


class SyntheticConfig(_Keys):
    """The synthetic backend's latency model and faults (see server/runtime/synthetic.py)."""

    base_ms: float = Field(0.0, ge=0)
    per_row_ms: float = Field(0.0, ge=0)
    crash_on_value: float | None = None
    hang_on_value: float | None = None
    error_rate: float = Field(0.0, ge=0, le=1)
    gate_path: str | None = None
    hang_path: str | None = None
    leak_mb_per_batch: float = Field(0.0, ge=0)
    signatures: dict[str, SignatureConfig] = Field(default_factory=dict)  # beside the inline one, by name


class ModelConfig(_Keys):
    """Every key is optional; absent keys take the server's settings."""

    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    preferred_batch_sizes: list[int] | None = None
    allowed_batch_sizes: list[int] | None = None
    max_queue_size: int | None = Field(None, ge=1)
    priority_levels: int | None = Field(None, ge=1)
    priority_aging_ms: float | None = Field(None, ge=0, allow_inf_nan=False, description="every this many ms a "
                                            "request waits raises its priority one level; absent or 0: no aging")
    default_timeout_ms: float | None = Field(None, gt=0)
    instances_per_device: int | None = Field(None, ge=1)
    devices: list[str] | None = None
    # the signatures served (None: all of them), and the default one (None: serving_default if served, else the
    # first listed, else the first by name)
    signature_name: str | None = None
    signatures: list[str] | None = Field(None, min_length=1)
    version_policy: VersionPolicy | None = None
    version_labels: dict[str, int] = Field(default_factory=dict)
    optimization: Literal["none"] | Optimization = "none"
    warmup_batch_sizes: list[int] | None = None
    warmup_examples: str | None = Field(None, description="a .npz or .json file of example inputs, in the "
                                        "version's folder or the model's, replayed at warm-up when the version "
                                        "has no assets.extra/tf_serving_warmup_requests")
    slo_ms: float | None = Field(None, gt=0)
    slo_reserve_ms: float | None = Field(None, ge=0)  # default: settings.slo_reserve_ms, else 2 % of slo_ms
    scheduling: Literal["fixed", "slo"] | None = None  # default: settings.scheduling (docs/scheduling.md)
    dispatch_when_idle: bool | None = None
    pad_inputs: dict[str, float | int | str] = Field(default_factory=dict)
    ragged_outputs: dict[str, RaggedOutputConfig] = Field(default_factory=dict)
    backend: Literal["tensorflow", "synthetic"] = "tensorflow"
    signature: SignatureConfig | None = None  # inline, for backend: synthetic
    synthetic: SyntheticConfig | None = None
    # Reliability (docs/reliability.md).
    retry_on_worker_crash: int = Field(1, ge=0, le=3, description="times a batch whose worker died or hung is "
                                       "run again before any request sees an error; 0 for models with side effects")
    poison_quarantine_s: float = Field(300.0, ge=0, description="seconds an input that crashed the model is refused")
    batch_timeout_ms: float | None = Field(None, gt=0, description="a batch running longer hangs: its process "
                                           "worker is killed (default: from the warm-up timings)")
    max_worker_rss_mb: float | None = Field(None, gt=0, description="a process worker above this RSS is replaced "
                                            "between batches")

    @model_validator(mode="after")
    def _synthetic_needs_signature(self) -> ModelConfig:
        if self.backend == "synthetic" and self.signature is None:
            raise ValueError("backend: synthetic needs an inline signature: {inputs: {...}, outputs: {...}}")
        if self.backend != "synthetic" and (self.signature is not None or self.synthetic is not None):
            raise ValueError("signature and synthetic apply only to backend: synthetic")
        return self

    @field_validator("warmup_examples")
    @classmethod
    def _examples(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = Path(value)
        if path.is_absolute() or ".." in path.parts or path.suffix not in EXAMPLE_SUFFIXES:
            raise ValueError(f"must name a {' or '.join(EXAMPLE_SUFFIXES)} file inside the model's folder or its "
                             "version's (a relative path without '..')")
        return value

    @field_validator("version_policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> VersionPolicy | None:
        return None if value is None else VersionPolicy.parse(value)

    def batch_config(self, settings: Settings, instances: int, engine_sizes: tuple[int, ...] | None = None
                     ) -> BatchConfig:
        """The batcher's configuration: these keys over the server's defaults.

        ``engine_sizes``: a TF-TRT model's pre-built sizes; they become the only sizes it is sent.
        """
        max_batch = max(engine_sizes) if engine_sizes else (self.max_batch_size or settings.max_batch_size)
        allowed = tuple(engine_sizes) if engine_sizes else tuple(self.allowed_batch_sizes or ())
        delay_ms = settings.max_queue_delay_ms if self.max_queue_delay_ms is None else self.max_queue_delay_ms
        timeout_ms = self.default_timeout_ms or settings.default_timeout_ms
        slo_ms = self.slo_ms or settings.slo_ms
        reserve_ms = next(r for r in (self.slo_reserve_ms, settings.slo_reserve_ms, DEFAULT_SLO_RESERVE * slo_ms)
                          if r is not None)
        return BatchConfig(
            max_batch_size=max_batch,
            max_queue_delay=delay_ms / 1000.0,
            preferred_batch_sizes=tuple(s for s in (self.preferred_batch_sizes or settings.preferred_batch_sizes)
                                        if s <= max_batch),
            allowed_batch_sizes=allowed,
            max_queue_size=self.max_queue_size or settings.max_queue_size,
            max_inflight_batches=instances,
            priority_levels=self.priority_levels or settings.priority_levels,
            priority_aging=self.priority_aging_ms / 1000.0 if self.priority_aging_ms else None,
            default_timeout=None if timeout_ms is None else timeout_ms / 1000.0,
            dispatch_when_idle=settings.dispatch_when_idle if self.dispatch_when_idle is None
            else self.dispatch_when_idle,
            scheduling=self.scheduling or settings.scheduling,
            slo=slo_ms / 1000.0,
            slo_reserve=reserve_ms / 1000.0,
            pad_inputs=self.pad_inputs,
            ragged_outputs={name: RaggedOutput(r.source_input, r.input_axis, r.output_axis)
                            for name, r in self.ragged_outputs.items()},
            retry_lost_batches=self.retry_on_worker_crash,
            poison_quarantine=self.poison_quarantine_s,
        )

    def warmup_sizes(self, max_batch_size: int, allowed: tuple[int, ...] = ()) -> list[int]:
        """Sizes to warm up: as configured, else the allowed sizes, else powers of two up to the max."""
        if self.warmup_batch_sizes is not None:
            return sorted(set(self.warmup_batch_sizes))
        if allowed or self.allowed_batch_sizes:
            return sorted(set(allowed or self.allowed_batch_sizes or ()))
        return [*(1 << i for i in range((max_batch_size - 1).bit_length())), max_batch_size]

    def model_spec(self, path: Path, settings: Settings) -> ModelSpec:
        """What the runtime loads for the version at ``path``."""
        synthetic = None
        if self.backend == "synthetic":
            assert self.signature is not None
            knobs = self.synthetic or SyntheticConfig()
            more = tuple(config.signature(name) for name, config in sorted(knobs.signatures.items()))
            default = self.signature.signature(self.signature_name or "serving_default")
            synthetic = SyntheticSpec(default, **knobs.model_dump(exclude={"signatures"}), more_signatures=more)
        trt = None
        if self.tensorrt is not None:
            sizes = self.tensorrt.batch_sizes or self.warmup_sizes(self.max_batch_size or settings.max_batch_size)
            trt = TensorRTSpec(self.tensorrt.precision, tuple(sorted(set(sizes))))
        return ModelSpec(path, self.signature_name, tuple(self.signatures or ()), trt, synthetic,
                         self.warmup_source(path))

    def warmup_source(self, path: Path) -> WarmupSource:
        """The real warm-up data of the version at ``path``: its TF Serving records, and ``warmup_examples``
        from its folder, else the model's (where neither has it, the version's path, which fails the load)."""
        records = path / RECORDS_PATH
        examples = None
        if self.warmup_examples is not None:
            found = [p / self.warmup_examples for p in (path, path.parent) if (p / self.warmup_examples).is_file()]
            examples = found[0] if found else path / self.warmup_examples
        return WarmupSource(records if records.is_file() else None, examples)

    def worker_spec(self, settings: Settings) -> WorkerSpec:
        """Where the version's instances run: these keys over the server's defaults."""
        return WorkerSpec(
            mode=settings.workers, devices=tuple(self.devices or ()),
            instances_per_device=self.instances_per_device or settings.instances_per_device,
            process_devices=settings.process_devices, tf_intra_op_threads=settings.tf_intra_op_threads,
            tf_inter_op_threads=settings.tf_inter_op_threads, gpu_memory_growth=settings.gpu_memory_growth,
            batch_timeout_s=None if self.batch_timeout_ms is None else self.batch_timeout_ms / 1000.0,
            max_rss_mb=self.max_worker_rss_mb or settings.max_worker_rss_mb, cores=settings.worker_core_set,
        )

    def relabels(self, other: ModelConfig | None) -> bool:
        """Whether this differs from ``other`` in ``version_labels`` only: a relabel, done without a reload."""
        return other is not None and self != other and self.model_copy(
            update={"version_labels": other.version_labels}) == other

    def check_labels(self, served: set[int]) -> None:
        """ModelConfigError unless every version label names a version in ``served`` (the versions on disk
        that the version policy serves), as TF Serving refuses a label for a version it does not serve."""
        stray = [f"{label!r} names version {number}" for label, number in sorted(self.version_labels.items())
                 if number not in served]
        if stray:
            raise ModelConfigError(f"version_labels: {'; '.join(stray)}, which is not served (versions served: "
                                   f"{sorted(served)}): a label may name only a version that is served")

    @property
    def tensorrt(self) -> TensorRTOptions | None:
        return self.optimization.tensorrt if isinstance(self.optimization, Optimization) else None


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read ``model_dir/model.yaml`` (absent: all defaults)."""
    path = model_dir / "model.yaml"
    if not path.exists():
        return ModelConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelConfigError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelConfigError(f"{path}: must be a mapping of keys to values")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        raise ModelConfigError(f"{path}: {config_problems(exc)}") from None


def config_problems(error: ValidationError, values: bool = True) -> str:
    """What is wrong with model.yaml's keys, one clause a key (with the value given, if ``values``)."""
    problems = []
    for err in error.errors():
        key = ".".join(map(str, err["loc"]))
        got = f" (got {err.get('input')!r})" if values else ""
        problems.append(f"unknown key {key!r}" if err["type"] == "extra_forbidden" else f"{key}: {err['msg']}{got}")
    return "; ".join(problems)
