"""A model version's metric series: its batcher's observer, and gauges that follow its life cycle.

A version's series are created at zero when it becomes available; a version
retired on purpose has its gauges removed, so the not-ready alert means a real failure.
"""

from __future__ import annotations

import contextlib

from server.models.catalog import ModelState, ModelVersion
from server.models.repository import ObserverFactory, StateListener
from server.observability.metrics import BatchMetrics, Metrics
from server.settings import Settings


def version_listener(metrics: Metrics, settings: Settings) -> tuple[ObserverFactory, StateListener]:
    """The batcher observer for each version, and the state listener that keeps its gauges true."""

    def make_observer(mv: ModelVersion, signature: str = "") -> BatchMetrics:
        observer = BatchMetrics(metrics, mv.name, str(mv.version), mv.backend, mv.device, signature)
        if mv.pool is not None:
            mv.pool.on_worker_restart = observer.worker_restarted
        return observer

    def on_state(mv: ModelVersion) -> None:
        labels = (mv.name, str(mv.version))
        ready = mv.state is ModelState.AVAILABLE
        unloaded = (*labels, "tensorflow", "")  # the series of a version without a pool: loading or failed
        retired = mv.state is ModelState.END and mv.error is None  # on purpose: its gauges go away
        if mv.pool is None and not retired:
            metrics.model_ready.labels(*unloaded).set(0)
            return
        with contextlib.suppress(KeyError):
            metrics.model_ready.remove(*unloaded)
        if retired:
            metrics.forget(*labels, mv.backend, mv.device)
            return
        metrics.model_ready.labels(*labels, mv.backend, mv.device).set(1 if ready else 0)
        if ready and mv.batch_config is not None:
            metrics.load_duration.labels(*labels).set(mv.load_seconds)
            metrics.warmup_duration.labels(*labels).set(mv.warmup_seconds)
            metrics.warmup_complete.labels(*labels).set(1 if mv.warmup_complete else 0)
            metrics.queue_capacity.labels(*labels).set(mv.batch_config.max_queue_size)
            metrics.max_batch_size.labels(*labels).set(mv.batch_config.max_batch_size)
            metrics.slo_target.labels(*labels).set((mv.config.slo_ms or settings.slo_ms) / 1000.0)
            signatures = mv.description.signatures if mv.description is not None else {}
            metrics.initialize(*labels, list(signatures) if len(signatures) > 1 else [""])

    return make_observer, on_state
