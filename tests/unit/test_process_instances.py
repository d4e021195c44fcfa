"""Process workers' instance bookkeeping, without starting a process: how many workers on which devices, which
free one takes the next batch, what the load warns about, and how Triton's instance group describes them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from server.core.vocabulary import Signature
from server.http.kserve import instance_group
from server.runtime.process_pool import ProcessWorkerPool
from server.runtime.spec import ModelSpec, SyntheticSpec, WorkerSpec

MODEL = ModelSpec(Path("/models/syn/1"), synthetic=SyntheticSpec(Signature("serving_default", {}, {})))


@pytest.fixture(autouse=True)
def _no_shared_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's blocks are made at construction, and the first block starts multiprocessing's resource
    tracker process: none here (no batch runs)."""
    monkeypatch.setattr("server.runtime.worker_slots.create_block", lambda size: None)


def pool(*devices: str, per_device: int = 2, growth: bool = True, process_devices: int = 1) -> ProcessWorkerPool:
    return ProcessWorkerPool(MODEL, WorkerSpec("process", devices, per_device, process_devices,
                                               gpu_memory_growth=growth))


def test_every_device_gets_its_instances_interleaved_and_is_named_once():
    gpus = pool("/GPU:0", "/device:GPU:1")
    assert gpus.instances == 4 and gpus.device == "gpu:0,gpu:1"
    assert [w.device for w in gpus._workers] == ["gpu:0", "gpu:1", "gpu:0", "gpu:1"]
    assert [w.where for w in gpus._workers][:2] == ["gpu:0 (instance 0)", "gpu:1 (instance 0)"]
    assert len({w.process_name for w in gpus._workers}) == 4
    alone = pool("cpu:0", per_device=1)  # one instance a device: named as before, by its device
    assert (alone.instances, alone._workers[0].where, alone._workers[0].process_name) == (
        1, "cpu:0", "batchserve-worker-cpu:0")


def test_a_cpu_only_host_runs_process_devices_times_instances(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    cpus = pool(process_devices=3)
    assert (cpus.instances, cpus.device) == (6, "cpu:0,cpu:1,cpu:2")


def test_the_next_batch_goes_to_the_device_with_the_fewest_busy():
    gpus = pool("gpu:0", "gpu:1")
    gpus._free = list(gpus._workers)
    taken = [gpus._least_busy() for _ in range(4)]
    assert [w.device for w in taken] == ["gpu:0", "gpu:1", "gpu:0", "gpu:1"]
    gpus._free = [taken[1], taken[0], taken[2]]  # gpu:0 idle, gpu:1 still has one batch in hand
    assert gpus._least_busy() is taken[0]
    assert gpus._least_busy() is taken[1]  # now one busy on each: the longest idle
    assert gpus._free == [taken[2]]


def test_several_instances_on_a_gpu_without_memory_growth_warn_at_load(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, "server.runtime.process_pool"):
        pool("gpu:0", per_device=1, growth=False)
        pool("cpu:0", growth=False)
        pool("gpu:0", growth=True)
        assert caplog.records == []
        pool("gpu:0", growth=False)
    assert "instances_per_device=2 with gpu_memory_growth off" in caplog.text
    assert "--gpu-memory-growth" in caplog.text


def test_tritons_instance_group_counts_per_gpu_and_in_all_on_the_cpu():
    assert instance_group("m", "gpu:0,gpu:1", 4) == {"name": "m", "count": 2, "kind": "KIND_GPU", "gpus": [0, 1]}
    assert instance_group("m", "/device:GPU:0", 2) == {"name": "m", "count": 2, "kind": "KIND_GPU", "gpus": [0]}
    assert instance_group("m", "cpu:0,cpu:1", 4) == {"name": "m", "count": 4, "kind": "KIND_CPU"}
    assert instance_group("m", "/CPU:0", 1) == {"name": "m", "count": 1, "kind": "KIND_CPU"}
