"""Which worker of the engine before a new engine may adopt, without starting a process: a worker's identity
(slot and digest), the orphans a WorkerHome claims and sweeps, and the warm-up an adopted worker keeps."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from server.core.vocabulary import Signature, TensorSpec
from server.runtime.spec import ModelSpec, SyntheticSpec, WorkerSpec
from server.runtime.warmup_data import WarmupBatch, WarmupResult
from server.runtime.worker_home import WorkerHome
from server.runtime.worker_launch import worker_identity

SIGNATURE = Signature("serving_default", {"x": TensorSpec("x", np.dtype("float32"), (-1, 2))},
                      {"y": TensorSpec("y", np.dtype("float32"), (-1, 1))})


def model(path: Path, **knobs: float) -> ModelSpec:
    return ModelSpec(path, synthetic=SyntheticSpec(SIGNATURE, **knobs))


def test_a_workers_digest_changes_with_its_settings_and_files_its_slot_with_its_place(tmp_path):
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"one")

    def identity(spec: ModelSpec, workers: WorkerSpec = WorkerSpec("process"), device: str = "cpu:0",
                 instance: int = 0) -> tuple[str, str]:
        return worker_identity(spec, workers, device, instance)

    slot, digest = identity(model(version))
    assert identity(model(version)) == (slot, digest)
    for changed in (identity(model(version, base_ms=2.0)),  # model.yaml's settings
                    identity(model(version), WorkerSpec("process", tf_intra_op_threads=2))):  # the server's
        assert changed[0] == slot and changed[1] != digest
    assert identity(model(version), instance=1)[0] != slot
    assert identity(model(version), device="gpu:0")[0] != slot
    stat = (version / "saved_model.pb").stat()
    os.utime(version / "saved_model.pb", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # replaced in place
    assert identity(model(version))[0] == slot and identity(model(version))[1] != digest


def test_a_home_claims_its_orphans_by_slot_and_digest_and_sweeps_the_rest(tmp_path):
    """Sockets whose worker is gone (plain files here: nothing listens) are removed as they are stopped."""
    for name in ("aaa.d1.10.sock", "aaa.d1.11.sock", "aaa.d2.12.sock", "bbb.d1.13.sock"):
        (tmp_path / name).touch()
    home = WorkerHome(tmp_path, supervisor=1)
    (tmp_path / "ccc.d1.14.sock").touch()  # a worker of this engine's own: never an orphan
    assert [p.name for p in home.claim("aaa", "d1")] == ["aaa.d1.10.sock", "aaa.d1.11.sock"]
    assert not (tmp_path / "aaa.d2.12.sock").exists()  # the same slot with other settings: stopped
    assert home.claim("aaa", "d1") == []  # claimed once
    assert home.listen_path("aaa", "d1") == str(tmp_path / "aaa.d1")
    assert home.sweep() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aaa.d1.10.sock", "aaa.d1.11.sock", "ccc.d1.14.sock"]


def test_an_adopted_workers_warmup_is_kept_only_when_it_tried_every_batch():
    def batch(size: int, generated: bool = True) -> WarmupBatch:
        return WarmupBatch("serving_default", size, {"x": np.zeros((size, 2), np.float32)}, generated)

    ran = WarmupResult([batch(1), batch(4)], [batch(8)])
    record = ran.record(0.25)
    assert record.slowest_s == 0.25
    kept = WarmupResult.kept(record, [batch(1), batch(4), batch(8)])
    assert kept is not None and [b.size for b in kept.ran] == [1, 4] and [b.size for b in kept.rejected] == [8]
    assert not kept.complete
    assert WarmupResult.kept(record, [batch(1), batch(16)]) is None  # a size it never ran: warm it up
    assert WarmupResult.kept(record, [batch(1, generated=False)]) is None  # real data now, generated then
    assert WarmupResult.kept(None, [batch(1)]) is None
    assert dataclasses.replace(ran, rejected=[]).record(None).rejected == frozenset()
