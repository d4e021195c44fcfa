"""The series of engine restarts (``--frontends N``): how often the engine restarted, and the requests the
front ends held and sent again meanwhile (server/multiprocess/hold.py).

The restarts are counted by the supervisor, which starts every engine and hands each its count: the
engine exposes it (front ends would count one restart once each). Held and replayed requests are
counted by the front ends, summed over them through the multiprocess files as their other series are.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


def count_restarts(registry: CollectorRegistry, restarts: int) -> None:
    """The engine's ``batchserve_engine_restarts_total``: how many engines the supervisor started before it."""
    counter = Counter("batchserve_engine_restarts", "Model engine processes restarted after one stopped "
                      "(killed, crashed or out of memory), since the server started.", registry=registry)
    counter.inc(restarts)


class HoldMetrics:
    """A front end's held and replayed requests. Not registered anywhere until ``register`` (the front end's
    application registry, where no multiprocess files exist: one process serving both roles in tests)."""

    def __init__(self) -> None:
        self.held = Counter("batchserve_engine_held_requests", "New requests that waited for a restarting "
                            "model engine (engine_restart_hold_s), summed over front ends.", registry=None)
        self.replayed = Counter("batchserve_engine_replayed_requests", "Requests in flight when the model engine "
                                "stopped, sent again to its replacement, summed over front ends.", registry=None)
        self.waiting = Gauge("batchserve_engine_waiting_requests", "Requests waiting for a restarting model engine "
                             "now (held and to be replayed), summed over front ends.", registry=None,
                             multiprocess_mode="livesum")

    def register(self, registry: CollectorRegistry) -> None:
        for metric in (self.held, self.replayed, self.waiting):
            registry.register(metric)
