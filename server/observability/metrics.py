"""The Prometheus registry, the batcher observer that feeds it, and the request-path accounting.

Names follow DESIGN.md; base units; labels stay low-cardinality (model, version,
protocol, code, reason, backend, device: never a request id or raw path). The lock-free
values of the request path (``loop_only``, ``incrementer``, ``observer``) reach into
prometheus_client's internals, so they live in server/observability/prometheus_seam.py.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from batching import RejectReason
from server.core.errors import known_errors
from server.observability import tracing
from server.observability.exemplars import ExemplarFile
from server.observability.model_stats import StatsTable, VersionStats
from server.observability.process_series import ProcessSeries
from server.observability.prometheus_seam import in_process, incrementer, keep_exemplar, loop_only, observer
from server.observability.trace_context import batch_timer, measure_batch

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LAG_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
MV = ("model", "version")
# a batcher's series: its signature is "" (to Prometheus: no label) unless its version serves several
MVS = (*MV, "signature")
# rejected_total's reasons counted against a version: every error class's (server/core/errors.py) and the
# batcher's own, but those admission counts before a version is resolved (version "") and worker_crashed
# (a crash is counted in worker_restarts_total; its requests are run again)
_UNVERSIONED = {"unauthenticated", "forbidden", "rate_limited", "inflight_full", "worker_crashed"}
REJECT_REASONS = sorted(({info.reason for info in known_errors().values()} | set(get_args(RejectReason)))
                        - _UNVERSIONED)


class Metrics:
    """Every batchserve metric, on its own registry (so tests can run several servers in one process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("batchserve_requests", "Requests answered, by HTTP status code.",
                                [*MV, "protocol", "code"], registry=r)
        self.request_duration = Histogram("batchserve_request_duration_seconds",
                                          "End-to-end time in the server, body read to response built.",
                                          [*MV, "protocol"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_duration = Histogram("batchserve_queue_duration_seconds",
                                        "Time a request waited in the batch queue.", MVS,
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.compute_duration = Histogram("batchserve_compute_duration_seconds",
                                          "Model time per batch.", [*MVS, "backend", "device"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("batchserve_batch_size", "Real rows per batch.", MVS,
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inferences = Counter("batchserve_inferences", "Real rows inferred.", MVS, registry=r)
        self.padding_rows = Counter("batchserve_padding_rows",
                                    "Padding rows added to reach an allowed batch size.", MVS, registry=r)
        self.batches = Counter("batchserve_batches", "Batches run, by outcome.", [*MVS, "outcome"], registry=r)
        self.queue_depth = Gauge("batchserve_queue_depth", "Rows waiting in the queue.", MVS, registry=r)
        self.inflight_batches = Gauge("batchserve_inflight_batches", "Batches being computed.", MVS, registry=r)
        self.queue_capacity = Gauge("batchserve_queue_capacity", "Rows the queue holds at most.", MV, registry=r)
        self.max_batch_size = Gauge("batchserve_max_batch_size", "Largest batch the model version takes.",
                                    MV, registry=r)
        self.rejected = Counter("batchserve_rejected", "Requests that never reached the model, by reason.",
                                [*MV, "reason"], registry=r)
        self.model_ready = Gauge("batchserve_model_ready", "1 while the model version serves.",
                                 [*MV, "backend", "device"], registry=r)
        self.load_duration = Gauge("batchserve_model_load_duration_seconds", "Time to load the version.",
                                   MV, registry=r)
        self.warmup_duration = Gauge("batchserve_model_warmup_duration_seconds", "Time to warm the version up.",
                                     MV, registry=r)
        self.warmup_complete = Gauge("batchserve_model_warmup_complete",
                                     "1 when every warm-up batch ran; 0 when the model rejected generated warm-up "
                                     "inputs (it serves; its first requests pay what warm-up did not run) or "
                                     "warm-up is off.",
                                     MV, registry=r)
        self.slo_requests = Counter("batchserve_slo_requests",
                                    "Requests by SLO outcome: good (answered within the SLO), late, rejected "
                                    "(before compute), expired (deadline passed in the queue), cancelled "
                                    "(client left), error (failed in compute).", [*MV, "outcome"], registry=r)
        self.slo_target = Gauge("batchserve_slo_target_seconds", "The latency SLO of the model.", MV, registry=r)
        self.model_control = Counter("batchserve_model_control", "Repository API loads and unloads, by outcome.",
                                     ["action", "outcome"], registry=r)
        self.predicted_compute = Gauge("batchserve_predicted_compute_seconds",
                                       "The cost model's predicted compute of one batch, by batch size (the "
                                       "warm-up sizes), learned from every batch.", [*MVS, "batch_size"], registry=r)
        self.loop_lag = Histogram("batchserve_event_loop_lag_seconds",
                                  "How late a front end's 2 ms timer fires: how long a request read now waits "
                                  "behind the work its process already has (scheduling: slo refuses by it).",
                                  buckets=LAG_BUCKETS, registry=r)
        self.admitted_rate_limit = Gauge("batchserve_admitted_rate_limit",
                                         "Requests/s the front ends let through to a scheduling: slo version "
                                         "while its answers come late, summed over front ends (0: no limit).",
                                         MV, multiprocess_mode="livesum", registry=r)
        self._exemplar_file: ExemplarFile | None = None  # a front end's of several: its exemplars, for the scrape
        self.live: dict[tuple[str, str, str], BatchMetrics] = {}  # for the predicted wait, computed at scrape time
        self.stats: StatsTable = {}  # Triton's statistics extension (kept across reloads, as the counters are)
        self.processes = ProcessSeries()  # process_* of this process and those its owner adds, read when scraped
        r.register(self.processes)
        r.register(_PredictedWait(self.live))
        self.config_errors: Callable[[], dict[str, bool]] = dict  # model → model.yaml broken; the repository's
        r.register(_ConfigErrors(self))
        self.lost_batches = Counter("batchserve_lost_batches",
                                    "Batch runs whose worker died or hung (each is run again, then bisected).",
                                    MVS, registry=r)
        self.worker_restarts = Counter("batchserve_worker_restarts",
                                       "Worker processes replaced, by reason: crash, hang (killed by the "
                                       "watchdog) or rss (over max_worker_rss_mb, between batches).",
                                       [*MV, "reason"], registry=r)

    def exemplar(self, histogram: Histogram, labels: tuple[str, ...], amount: float, trace_id: str) -> None:
        """A sampled request's trace id as the exemplar of the bucket of ``histogram{labels}`` that holds
        ``amount`` (observed already); a front end of several keeps it in its exemplar file (exemplars.py)."""
        elsewhere = keep_exemplar(histogram, labels, amount, {"trace_id": trace_id})
        if elsewhere is None:
            return
        if self._exemplar_file is None:
            directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
            if directory is None:
                return
            self._exemplar_file = ExemplarFile(directory)
        self._exemplar_file.put(*elsewhere)

    def initialize(self, model: str, version: str, signatures: Sequence[str] = ("",)) -> None:
        """Create every labelled series of a version (and of each of its batchers' ``signatures`` labels) at
        zero, so rates and alerts see it from the start."""
        for reason in REJECT_REASONS:
            self.rejected.labels(model, version, reason)
        for reason in ("crash", "hang", "rss"):
            self.worker_restarts.labels(model, version, reason)
        for outcome in ("good", "late", "rejected", "expired", "cancelled", "error"):
            self.slo_requests.labels(model, version, outcome)
        for signature in signatures:
            self.lost_batches.labels(model, version, signature)
            for outcome in ("ok", "error"):
                self.batches.labels(model, version, signature, outcome)
            self.inferences.labels(model, version, signature)
            self.padding_rows.labels(model, version, signature)

    def forget(self, model: str, version: str, backend: str, device: str) -> None:
        """Drop a retired version's gauges, so a version that left on purpose never looks 'not ready'."""
        series: list[tuple[Gauge, tuple[str, ...]]] = [(self.model_ready, (model, version, backend, device))] + [
            (gauge, (model, version)) for gauge in (self.queue_capacity, self.max_batch_size, self.slo_target)]
        for key in [key for key in self.live if key[:2] == (model, version)]:
            observer = self.live.pop(key)
            series += [(self.queue_depth, key), (self.inflight_batches, key)]
            series += [(self.predicted_compute, (*key, str(size))) for size in observer.predicted]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)


class BatchMetrics:
    """The observer of one model version's batcher (one per signature served): label children bound once,
    cheap to call. ``signature`` is the label's value: "" where the version serves one signature."""

    def __init__(self, metrics: Metrics, model: str, version: str, backend: str, device: str,
                 signature: str = "") -> None:
        labels = (model, version, signature)
        self._metrics = metrics
        self._labels = labels
        self._version = (model, version)
        # the batcher calls these on the event loop's thread: no locks (loop_only), no wrapper checks
        self._queue_wait = observer(metrics.queue_duration.labels(*labels))
        self._batch_size = observer(metrics.batch_size.labels(*labels))
        self._padding = incrementer(metrics.padding_rows.labels(*labels))
        self._compute = observer(metrics.compute_duration.labels(*labels, backend, device))
        self._inferences = incrementer(metrics.inferences.labels(*labels))
        self._ok = incrementer(metrics.batches.labels(*labels, "ok"))
        self._failed = incrementer(metrics.batches.labels(*labels, "error"))
        self._depth = metrics.queue_depth.labels(*labels)
        self._inflight = loop_only(metrics.inflight_batches.labels(*labels))
        self._lost = metrics.lost_batches.labels(*labels)
        self.rows = 0  # queued now
        # the queue depth changes twice a request: it is read when scraped instead of set each time
        self._depth_read = in_process(self._depth)  # not a multiprocess file
        if self._depth_read:
            self._depth.set_function(lambda: self.rows)
        self.predicted: dict[int, float] = {}  # batch size -> predicted compute seconds
        metrics.live[labels] = self
        self._stats = metrics.stats.setdefault(self._version, VersionStats())  # the version's, all signatures

    def queue_wait(self, seconds: float, requests: int = 1) -> None:
        observe = self._queue_wait
        if requests == 1:
            observe(seconds)
        else:
            for _ in range(requests):
                observe(seconds)
        self._stats.queued(seconds, requests)

    def batch_formed(self, rows: int, padding_rows: int) -> None:
        self._batch_size(rows)
        if padding_rows:
            self._padding(padding_rows)

    def batch_computed(self, seconds: float, rows: int, ok: bool) -> None:
        self._compute(seconds)
        if ok:
            self._inferences(rows)
            self._ok(1)
            self._stats.computed(seconds, rows)
        else:
            self._failed(1)

    def batch_lost(self, rows: int, attempt: int) -> None:
        self._lost.inc()

    def worker_restarted(self, reason: str) -> None:
        self._metrics.worker_restarts.labels(*self._version, reason).inc()

    def queue_depth(self, rows: int) -> None:
        self.rows = rows
        if not self._depth_read:
            self._depth.set(rows)

    def predicted_compute(self, batch_size: int, seconds: float) -> None:
        self.predicted[batch_size] = seconds
        self._metrics.predicted_compute.labels(*self._labels, str(batch_size)).set(seconds)

    def predicted_wait(self) -> float | None:
        """Seconds for the queue to run in full batches at the predicted cost of the largest (None: no costs yet)."""
        if not self.predicted:
            return None
        largest = max(self.predicted)
        return math.ceil(self.rows / largest) * self.predicted[largest]

    def inflight_batches(self, batches: int) -> None:
        self._inflight.set(batches)

    def rejected(self, reason: RejectReason, rows: int, requests: int = 1) -> None:
        self._metrics.rejected.labels(*self._version, reason).inc(requests)

    def batch_traced(self, members: list[tuple[Any, float | None]], rows: int) -> Callable[[bool], None]:
        """Sampled requests' batch numbers (``Measured``: their request lines'); the traced ones' queue waits as
        exemplars (their trace ids), and their batch's spans (spans.py)."""
        traced = measure_batch(members, rows)
        end = None
        if traced:
            for member, waited in traced:
                if waited is not None:
                    self._metrics.exemplar(self._metrics.queue_duration, self._labels, waited, member.parent[3:35])
            from server.observability.spans import start_batch  # imports the SDK: only once a traced batch runs

            end = start_batch(tracing.TRACER, traced, rows, self._labels)
        return batch_timer(members, end)


class _PredictedWait(Collector):
    """``batchserve_predicted_wait_seconds``, computed when scraped (nothing on the request path)."""

    def __init__(self, live: dict[tuple[str, str, str], BatchMetrics]) -> None:
        self._live = live

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("batchserve_predicted_wait_seconds",
                                   "Predicted time for the rows queued now to run: full batches at the predicted "
                                   "compute of the largest batch (the cost model's).", labels=list(MVS))
        for labels, version in list(self._live.items()):
            wait = version.predicted_wait()
            if wait is not None:
                family.add_metric(list(labels), wait)
        yield family


class _ConfigErrors(Collector):
    """``batchserve_model_config_error{model}``, read from the repository when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("batchserve_model_config_error",
                                   "1 while the model's model.yaml is broken (what it loaded before serves on with "
                                   "its last good configuration, and stays ready).", labels=["model"])
        for model, broken in self._metrics.config_errors().items():
            family.add_metric([model], 1.0 if broken else 0.0)
        yield family
