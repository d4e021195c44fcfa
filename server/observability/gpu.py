"""GPU series through NVML (``pip install batchserve[gpu]``: nvidia-ml-py), read when /metrics is scraped.

Triton's names, so its dashboards and alerts work unchanged, per device by ``gpu_uuid``:
``nv_gpu_utilization`` (0 to 1, the share of the last sample period a kernel ran),
``nv_gpu_memory_used_bytes``, ``nv_gpu_memory_total_bytes`` and ``nv_gpu_power_usage`` (watts). Every device
NVML sees is reported (a container sees the GPUs it was given). A value the device cannot give (power on
some boards) is left out for that device, never a scrape error.

The process that holds the models registers the collector while it serves (``gpu_series``). Without the
module, or where NVML cannot start (no driver, no GPU), nothing is registered and one line says why at info.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
LABELS = ["gpu_uuid"]


def load_nvml(module: str = "pynvml") -> Any | None:
    """The NVML module, initialised; None (and why, logged at info) when there is no GPU to read."""
    try:
        nvml = importlib.import_module(module)
    except ImportError:
        log.info("no GPU series: the NVML module (pip install batchserve[gpu]) is not installed")
        return None
    try:
        nvml.nvmlInit()
    except Exception as error:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no GPU here
        log.info("no GPU series: NVML did not start (%s)", error or type(error).__name__)
        return None
    return nvml


class GpuSeries(Collector):
    """Utilization, memory and power of every device, asked of NVML at each scrape."""

    def __init__(self, nvml: Any) -> None:
        self.nvml = nvml
        self.devices: list[tuple[str, Any]] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            self.devices.append((uuid.decode() if isinstance(uuid, bytes) else str(uuid), handle))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        nvml = self.nvml
        utilization = GaugeMetricFamily("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", labels=LABELS)
        used = GaugeMetricFamily("nv_gpu_memory_used_bytes", "GPU used memory, in bytes", labels=LABELS)
        total = GaugeMetricFamily("nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=LABELS)
        power = GaugeMetricFamily("nv_gpu_power_usage", "GPU power usage in watts", labels=LABELS)
        for uuid, handle in self.devices:
            with contextlib.suppress(nvml.NVMLError):
                utilization.add_metric([uuid], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            with contextlib.suppress(nvml.NVMLError):
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                used.add_metric([uuid], float(memory.used))
                total.add_metric([uuid], float(memory.total))
            with contextlib.suppress(nvml.NVMLError):
                power.add_metric([uuid], nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0)  # milliwatts
        yield from (utilization, used, total, power)


@contextlib.contextmanager
def gpu_series(registry: CollectorRegistry, module: str = "pynvml") -> Iterator[GpuSeries | None]:
    """The GPU series on ``registry`` for the block's length, when NVML can read a GPU (else None)."""
    nvml = load_nvml(module)
    if nvml is None:
        yield None
        return
    try:
        collector = GpuSeries(nvml)
        if not collector.devices:
            raise LookupError("it sees no device")
        registry.register(collector)
    except Exception as error:
        log.info("no GPU series: NVML listed no device it could read (%s)", error)
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
        yield None
        return
    log.info("GPU series for %d devices: %s", len(collector.devices), ", ".join(u for u, _ in collector.devices))
    try:
        yield collector
    finally:
        registry.unregister(collector)
        with contextlib.suppress(Exception):
            nvml.nvmlShutdown()
