"""The repository's life in the process that runs the models: load and warm, poll, drain on the way out.

Start-up freezes the garbage collector's view of TensorFlow's objects (they
caused 100+ ms tail spikes) and shortens the GIL switch interval so a model
thread finishing a batch gets the GIL back from a busy event loop quickly.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
from collections.abc import AsyncIterator

from server.models.catalog import ModelVersion
from server.models.repository import ModelRepository, StateListener
from server.observability.gpu import gpu_series
from server.observability.metrics import Metrics
from server.observability.process_series import worker_processes
from server.observability.version_metrics import version_listener
from server.runtime.saturation import LoopSaturation
from server.runtime.worker_home import WorkerHome
from server.settings import Settings


@contextlib.asynccontextmanager
async def serving_repository(settings: Settings, metrics: Metrics, on_change: StateListener | None = None,
                             home: WorkerHome | None = None) -> AsyncIterator[ModelRepository]:
    """A loaded repository, polled for new versions until the block exits; then every queue drains. Process
    workers outlive this process in ``home``: its workers the first load did not adopt are stopped after it."""
    make_observer, keep_gauges = version_listener(metrics, settings)

    def on_state(mv: ModelVersion) -> None:
        keep_gauges(mv)
        if on_change is not None:
            on_change(mv)

    busy = LoopSaturation(settings.idle_dispatch_busy_share) if settings.idle_dispatch_busy_share > 0 else None
    repository = ModelRepository(settings, make_observer, on_state, home, busy)  # the models model_control_mode says
    metrics.config_errors = lambda: {name: repository.config_error(name) is not None for name in repository.names()}
    metrics.processes.add(worker_processes(repository))
    await repository.sync()
    if home is not None:
        home.sweep()
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)
    poller = asyncio.create_task(repository.poll())
    try:
        with gpu_series(metrics.registry):
            yield repository
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await repository.close()
