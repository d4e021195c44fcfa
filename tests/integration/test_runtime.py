"""Worker pools in this process: real SavedModels, predictions equal direct signature calls."""

from __future__ import annotations

import time

import numpy as np
import pytest

from batching import TimedOutputs
from server.core.vocabulary import example_inputs
from server.models.config import ModelConfig
from server.runtime import ModelLoadError
from server.settings import Settings

from ..pools import pool_for
from ..reference import direct


def sample(name: str, rows: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    return {
        "spam": {"text": np.array([b"win a free laptop now", b"notes from the budget meeting", b"x"][:rows],
                                  dtype=object)},
        "image_classifier": {"image": rng.random((rows, 96, 96, 3), dtype=np.float32)},
        "tabular": {"features": rng.standard_normal((rows, 32)).astype(np.float32)},
        "scale": {"x": rng.standard_normal((rows, 4)).astype(np.float32)},
        "two_io": {"a": rng.standard_normal((rows, 3)).astype(np.float32), "b": np.arange(rows, dtype=np.int32)},
    }[name]


async def timed_run(pool, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pool.run, checking that the pool says how long the model itself took (what the cost model learns)."""
    started = time.perf_counter()
    outputs = await pool.run(inputs)
    wall = time.perf_counter() - started
    assert isinstance(outputs, TimedOutputs) and 0 < outputs.seconds <= wall
    return outputs


def assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if value.dtype == object:
            assert got[key].tolist() == value.tolist()
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["spam", "image_classifier", "tabular", "scale", "two_io"])
async def test_thread_pool_equals_direct_call(demo_repository, name):
    path = demo_repository / name / "1"
    pool = pool_for(path, ModelConfig(instances_per_device=2))
    await pool.start()
    try:
        assert pool.instances == 2 and pool.backend == "tensorflow" and pool.device == "/CPU:0"
        inputs = sample(name)
        assert set(pool.signature.inputs) == set(inputs)
        assert_same(await timed_run(pool, inputs), direct(path, **inputs))
        warm = await pool.run(example_inputs(pool.signature, 4))
        assert all(v.shape[0] == 4 for v in warm.values())
    finally:
        await pool.close()


async def test_two_inputs_two_outputs_signature(demo_repository):
    pool = pool_for(demo_repository / "two_io" / "1", ModelConfig())
    await pool.start()
    try:
        sig = pool.signature
        assert {n: (s.datatype, s.shape) for n, s in sig.inputs.items()} == {"a": ("FP32", (-1, 3)), "b": ("INT32", (-1,))}
        assert {n: s.datatype for n, s in sig.outputs.items()} == {"total": "FP32", "doubled": "INT32"}
    finally:
        await pool.close()


async def test_process_pool_equals_direct_call_with_strings_and_numbers(demo_repository):
    for name in ("spam", "two_io"):
        path = demo_repository / name / "1"
        pool = pool_for(path, settings=Settings(workers="process", process_devices=1))
        await pool.start()
        try:
            assert pool.mode == "process" and len(pool.pids) == 1
            inputs = sample(name)
            assert_same(await timed_run(pool, inputs), direct(path, **inputs))
            big = {k: np.concatenate([v] * 2000) for k, v in inputs.items()}  # outgrows the shared blocks
            assert_same(await pool.run(big), direct(path, **big))
        finally:
            await pool.close()


async def test_missing_signature_and_corrupt_model_fail_with_clear_errors(demo_repository, tmp_path):
    pool = pool_for(demo_repository / "scale" / "1", ModelConfig(signature_name="nope"))
    with pytest.raises(ModelLoadError, match="has no signature 'nope'; it has \\['serving_default'\\]"):
        await pool.start()
    broken = tmp_path / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"definitely not a protobuf")
    pool = pool_for(broken, ModelConfig())
    with pytest.raises(ModelLoadError, match="cannot load SavedModel"):
        await pool.start()
