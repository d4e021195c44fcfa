"""GPU series from a fake NVML module (nvidia-ml-py's names and units): values per device, a value a device
cannot give left out, and nothing registered where NVML is missing or cannot start."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from types import ModuleType, SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.observability.gpu import gpu_series

FAKE = "fake_pynvml_for_tests"
NVML_NAMES = ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetUUID",
              "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPowerUsage", "NVMLError")


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


def fake_nvml(devices: list[dict], init_error: Exception | None = None) -> ModuleType:  # type: ignore[type-arg]
    """nvidia-ml-py's calls over ``devices`` (uuid, util percent, used and total bytes, milliwatts or None)."""
    module = ModuleType(FAKE)
    module.calls = []  # type: ignore[attr-defined]

    def init() -> None:
        module.calls.append("init")  # type: ignore[attr-defined]
        if init_error is not None:
            raise init_error

    def power(handle: dict) -> int:  # type: ignore[type-arg]
        if handle["mw"] is None:
            raise NotSupported("Not Supported")
        return int(handle["mw"])

    module.__dict__.update(
        NVMLError=NVMLError, nvmlInit=init, nvmlShutdown=lambda: module.calls.append("shutdown"),  # type: ignore[attr-defined]
        nvmlDeviceGetCount=lambda: len(devices), nvmlDeviceGetHandleByIndex=lambda i: devices[i],
        nvmlDeviceGetUUID=lambda h: h["uuid"],
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=h["util"], memory=0),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=h["used"], total=h["total"], free=h["total"] - h["used"]),
        nvmlDeviceGetPowerUsage=power)
    return module


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    def put(module: ModuleType) -> ModuleType:
        monkeypatch.setitem(sys.modules, FAKE, module)
        return module

    yield put


def _values(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {(s.name, s.labels["gpu_uuid"]): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if f.name.startswith("nv_gpu_")}


def test_each_device_is_read_at_each_scrape(install, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="server.observability.gpu")
    devices = [{"uuid": b"GPU-aaaa", "util": 42, "used": 3 * 2**30, "total": 80 * 2**30, "mw": 250_500},
               {"uuid": "GPU-bbbb", "util": 0, "used": 0, "total": 16 * 2**30, "mw": None}]  # no power reading
    nvml = install(fake_nvml(devices))
    registry = CollectorRegistry()
    with gpu_series(registry, FAKE) as collector:
        assert collector is not None
        assert _values(registry) == {
            ("nv_gpu_utilization", "GPU-aaaa"): 0.42, ("nv_gpu_utilization", "GPU-bbbb"): 0.0,
            ("nv_gpu_memory_used_bytes", "GPU-aaaa"): 3 * 2**30, ("nv_gpu_memory_used_bytes", "GPU-bbbb"): 0.0,
            ("nv_gpu_memory_total_bytes", "GPU-aaaa"): 80 * 2**30, ("nv_gpu_memory_total_bytes", "GPU-bbbb"): 16 * 2**30,
            ("nv_gpu_power_usage", "GPU-aaaa"): 250.5}
        devices[0]["util"] = 97
        assert _values(registry)["nv_gpu_utilization", "GPU-aaaa"] == 0.97
    assert _values(registry) == {} and nvml.calls == ["init", "shutdown"]
    assert [r.getMessage() for r in caplog.records] == ["GPU series for 2 devices: GPU-aaaa, GPU-bbbb"]


@pytest.mark.parametrize(("module", "said"), [
    (None, "no GPU series: the NVML module (pip install batchserve[gpu]) is not installed"),
    (fake_nvml([], NVMLError("NVML Shared Library Not Found")), "no GPU series: NVML did not start "
                                                                 "(NVML Shared Library Not Found)"),
    (fake_nvml([]), "no GPU series: NVML listed no device it could read (it sees no device)"),
], ids=["no module", "no driver", "no device"])
def test_without_a_gpu_nothing_is_registered_and_one_line_says_why(install, module: ModuleType | None,  # type: ignore[no-untyped-def]
                                                                  said: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.observability.gpu")
    if module is not None:
        install(module)
    registry = CollectorRegistry()
    with gpu_series(registry, FAKE if module is not None else "no_such_nvml_module") as collector:
        assert collector is None and _values(registry) == {}
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", said)]


def test_the_fake_has_the_real_modules_names() -> None:
    """The calls the collector makes exist in nvidia-ml-py (where it is installed: batchserve[gpu])."""
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install batchserve[gpu])")
    assert [name for name in NVML_NAMES if not hasattr(pynvml, name)] == []
    assert set(NVML_NAMES) <= set(vars(fake_nvml([])))


def test_the_real_nvml_reads_each_gpu_or_says_there_is_none(caplog: pytest.LogCaptureFixture) -> None:
    """nvidia-ml-py itself: here (no GPU) one line and nothing registered; on a GPU machine, every device read."""
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install batchserve[gpu])")
    caplog.set_level(logging.INFO, logger="server.observability.gpu")
    registry = CollectorRegistry()
    with gpu_series(registry) as collector:
        values = _values(registry)
    if collector is None:
        assert values == {}
        [record] = caplog.records
        assert record.getMessage().startswith("no GPU series: NVML did not start (")
        return
    devices = {uuid for _, uuid in values}
    assert devices == {uuid for uuid, _ in collector.devices} and all(u.startswith(("GPU-", "MIG-")) for u in devices)
    for uuid in devices:
        assert 0 <= values["nv_gpu_utilization", uuid] <= 1
        assert 0 < values["nv_gpu_memory_used_bytes", uuid] < values["nv_gpu_memory_total_bytes", uuid]
