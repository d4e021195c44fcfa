"""All configuration: CLI flags, BATCHSERVE_* environment variables and defaults, in one place.

Every field is an environment variable (``BATCHSERVE_<FIELD>``) and a
``batchserve serve --<field>`` flag; per-model ``model.yaml`` values override
the batching and runtime defaults here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SLO_RESERVE = 0.02  # of slo_ms, where neither model.yaml nor the settings name an slo_reserve_ms


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATCHSERVE_", extra="forbid", protected_namespaces=())

    # Where and how to listen.
    model_repository: Path = Field(Path("models"), description="root of the TF Serving layout: NAME/VERSION/")
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port (0: pick a free one)")
    grpc_port: int = Field(8001, ge=0, le=65535, description="gRPC port (KServe V2 and TF Serving APIs, health, "
                           "reflection; messages up to max_body_bytes); 0 disables gRPC")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="serve /metrics on its own port as "
                                       "well, without TLS or tokens (with frontends > 1: every process's totals, "
                                       "served by each front end)")
    max_body_bytes: int = Field(64 * 2**20, ge=1024, description="largest request body accepted (413 beyond)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = Field(False, description="uvicorn's access line for the HTTP requests it answers itself (not "
                             "the inference fast path: access_log_sample logs those)")
    log_format: Literal["text", "json"] = Field("text", description="text, or json: one object a line with time, "
                                                "level, logger, message, role, index, pid (docs/observability.md)")
    access_log_sample: float = Field(0.0, ge=0, le=1, description="share of inference requests that get a request "
                                     "line (request id, model, version, status, duration; answered with x-request-id);"
                                     " 0: none, at no cost")
    error_log_interval_s: float = Field(10.0, ge=0, description="failed and refused requests are logged at most "
                                        "once per this many seconds per status and reason, with the count held back")
    proxy_headers: bool = Field(False, description="trust X-Forwarded-* headers (only behind a proxy you run)")

    # Process layout.
    frontends: int | Literal["auto"] = Field(
        1, description="front-end processes sharing the port (HTTP, decoding, validation, encoding) around one model "
        "engine process; 1 keeps everything in one process; auto: the cores left after the engine")
    frontend_arena_mb: int = Field(256, ge=8, description="shared memory per front end for request tensors in "
                                   "flight (503 beyond); touched only as it is used")
    engine_restart_hold_s: float = Field(
        5.0, ge=0, description="frontends > 1: while the model engine restarts, a front end holds each new request "
        "up to this long (and each one in flight when it stopped and without a deadline, from then) and sends it "
        "to the new engine once that is ready; past it, 503 with Retry-After. 0: no hold, 503 at once "
        "(docs/reliability.md#engine-restarts)")
    engine_restart_hold_requests: int = Field(
        1000, ge=0, description="frontends > 1: new requests one front end holds at most while the engine restarts "
        "(503 with Retry-After beyond)")

    # Repository behaviour.
    poll_interval: float = Field(2.0, ge=0, description="seconds between repository scans; 0 disables hot reload")
    version_policy: str = Field("latest:1", description="default version policy: latest:N | all | specific:1,2")
    warmup: bool = Field(True, description="run each new version at its warm-up batch sizes before it is ready")
    strict_readiness: bool = Field(True, description="true (as Triton): a model that never loaded makes the server "
                                   "unready; false: ready while any model serves (per-model readiness is unchanged)")

    # Security and model control (docs/security.md).
    model_control_mode: Literal["poll", "explicit", "none"] = Field(
        "poll", description="poll: load what is in the repository and watch it (poll_interval); explicit: load "
        "only load_models at start, then what the repository API loads; none: load everything once, then refuse "
        "every change (load, unload, /admin/repository/sync) until a restart")
    load_models: str = Field("", description="explicit mode: models to load at start, comma-separated (* for all)")
    auth_tokens_file: Path | None = Field(None, description="YAML file of bearer tokens with scopes; set, every "
                                          "route but health and readiness needs a token")
    auth_health: bool = Field(False, description="with auth_tokens_file: health and readiness need a valid token too")
    auth_reload_interval: float = Field(5.0, ge=0, description="seconds between checks of the tokens file for "
                                        "changes (0: only on SIGHUP)")
    ssl_certfile: Path | None = Field(None, description="PEM certificate (chain): serve HTTPS")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile")
    ssl_ca_certs: Path | None = Field(None, description="PEM CA bundle: clients must present a certificate it "
                                      "signed (mutual TLS)")
    auth_rate_limit: float = Field(0.0, ge=0, description="requests a second per token, in bursts of as many "
                                   "(429 beyond); 0: no limit")
    max_header_count: int = Field(100, ge=1, description="headers per request (431 beyond)")
    max_header_bytes: int = Field(16384, ge=1024, description="bytes of request line and headers (431 beyond)")
    max_inflight_bytes: int = Field(2**30, ge=0, description="request body bytes one front end holds at once "
                                    "(503 beyond; one request alone is bounded by max_body_bytes); 0: no limit")

    # Batching defaults (model.yaml overrides per model).
    max_batch_size: int = Field(32, ge=1)
    max_queue_delay_ms: float = Field(2.0, ge=0)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(4096, ge=1, description="rows waiting per model version before 503")
    priority_levels: int = Field(3, ge=1, description="request priorities per model (KServe parameters.priority: "
                                 "1 highest, 0 default); a higher one is always served first unless model.yaml sets "
                                 "priority_aging_ms")
    default_timeout_ms: float | None = Field(None, gt=0, description="deadline for requests that bring none")
    slo_ms: float = Field(100.0, gt=0, description="latency SLO per request: the SLO counters, and the deadline "
                          "that scheduling: slo schedules against")
    slo_reserve_ms: float | None = Field(
        None, ge=0, description="scheduling: slo: the part of each SLO kept for the work outside the queue (reading "
        "the request, encoding and sending the answer, the network); requests are planned to finish by arrival + "
        "slo_ms - slo_reserve_ms. Default: 2 % of slo_ms")
    scheduling: Literal["fixed", "slo"] = Field(
        "fixed", description="fixed: batches wait up to max_queue_delay_ms; slo: earliest deadline first, batches "
        "sized so the most urgent request finishes within slo_ms, requests predicted to finish late refused (503)")
    overload_share: float = Field(
        0.1, ge=0, le=1, description="scheduling: slo: while a front end's event loop runs more than this share of "
        "a model's SLO (less the reserve) behind, that model's requests are refused (503, reason overloaded) as "
        "soon as their headers are read, before their bodies; 0: never (docs/scheduling.md#front-end-overload)")
    admission_late_share: float = Field(
        0.2, ge=0, le=1, description="scheduling: slo: when more than this share of a model's answers came late "
        "(after slo_ms, or expired) in admission_late_windows windows of admission_window_ms in a row, each front "
        "end limits the rate of that model's requests it lets through, refusing the rest (503, reason "
        "admitted_rate); raised again while answers are on time; 0: never (docs/scheduling.md#admitted-rate)")
    admission_window_ms: float = Field(
        50.0, gt=0, description="scheduling: slo: the answers of this many ms are judged together for "
        "admission_late_share (each window cuts, raises or drops the admitted rate)")
    admission_late_windows: int = Field(
        3, ge=1, description="scheduling: slo: late windows in a row (admission_late_share) that start limiting "
        "a model's admitted rate; one is enough to cut it again while it is limited")
    dispatch_when_idle: bool = Field(True, description="no batch computing: dispatch at once instead of waiting "
                                     "max_queue_delay_ms (low latency at low load, full batches under load)")
    idle_dispatch_busy_share: float = Field(
        0.9, ge=0, le=1, description="dispatch_when_idle holds while the event loop's CPU is this busy (the loop "
        "thread this share of a core, or the process of every core it may use): a batch of a few rows costs the "
        "loop as much CPU as a full one, so batches then fill for max_queue_delay_ms "
        "(docs/scheduling.md#dispatch-when-idle); 0: never holds")

    # Workers.
    workers: Literal["thread", "process"] = Field("thread", description="thread: model instances on threads in the "
                                                  "server; process: each instance a worker process")
    instances_per_device: int = Field(1, ge=1, description="model instances (threads or worker processes) per "
                                      "device, each with a batch of its own in flight (model.yaml overrides)")
    process_devices: int = Field(1, ge=1, description="process mode on a CPU-only host: CPU devices, each running "
                                 "instances_per_device worker processes")
    tf_intra_op_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads; 0 = TensorFlow's default")
    tf_inter_op_threads: int = Field(0, ge=0, description="TensorFlow inter-op threads; 0 = TensorFlow's default")
    gpu_memory_growth: bool = True
    max_worker_rss_mb: float | None = Field(None, gt=0, description="replace a process worker between batches once "
                                            "its resident memory passes this (model.yaml overrides)")
    worker_cores: str = Field("", description="process workers: the CPU cores they run on, e.g. 0 or 0,2-3 (empty: "
                              "the server's); keeps models off the cores that serve requests, as a GPU is")

    @field_validator("worker_cores")
    @classmethod
    def _cores_listed(cls, value: str) -> str:
        parse_cores(value)
        return value

    @model_validator(mode="after")
    def _cores_need_processes(self) -> Settings:
        if self.worker_cores and self.workers != "process":
            raise ValueError("worker_cores pins process workers: it needs workers=process (thread workers share "
                             "the server's process and its cores)")
        return self

    @property
    def worker_core_set(self) -> tuple[int, ...]:
        return parse_cores(self.worker_cores)

    # Tracing (docs/tracing.md).
    tracing: Literal["auto", "on", "off"] = Field(
        "auto", description="OpenTelemetry traces of sampled requests (pip install 'batchserve[otel]'), configured by "
        "the standard OTEL_* variables: auto: on when OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT "
        "or OTEL_TRACES_EXPORTER is set; on: always (the SDK's default endpoint unless one is set); off: never")

    # Shutdown and process hygiene.
    drain_timeout_s: float = Field(30.0, ge=0, description="how long shutdown waits for accepted requests")
    gc_freeze: bool = Field(True, description="gc.freeze() after models load, to keep GC off TensorFlow's objects")
    gil_switch_interval_ms: float = Field(
        0.5, gt=0, description="sys.setswitchinterval: how soon a model thread finishing a batch gets the GIL back "
        "from a busy event loop (Python's default, 5 ms, stalls the model between batches)")


def parse_cores(text: str) -> tuple[int, ...]:
    """``0,2-3`` -> (0, 2, 3), as taskset -c reads a list; ValueError naming what is wrong."""
    cores: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"worker_cores: {part!r} is not a core number or a range like 2-3") from None
        if first < 0 or last < first:
            raise ValueError(f"worker_cores: {part!r} is not a range of core numbers")
        cores.update(range(first, last + 1))
    return tuple(sorted(cores))
