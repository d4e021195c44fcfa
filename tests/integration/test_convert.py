"""Format import (frozen GraphDef, TF1 .meta checkpoint, TF2 checkpoint) and the TF-TRT path's CPU behaviour."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import numpy as np
import pytest

from server.models.config import ModelConfig
from server.runtime import ModelSpec, TensorFlowModel, load_model, tensorrt_status
from server.settings import Settings

from ..pools import pool_for
from ..servers import ROOT

tf = pytest.importorskip("tensorflow")
HAS_TENSORRT = tensorrt_status().available
X = np.random.default_rng(10).standard_normal((5, 6)).astype(np.float32)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.tools.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def assert_dynamic_batch_signature(path, inputs, outputs):
    model = TensorFlowModel(path)
    assert model.signature.name == "serving_default"
    assert sorted(model.signature.inputs) == sorted(inputs) and sorted(model.signature.outputs) == sorted(outputs)
    assert all(spec.shape[0] == -1 for spec in model.signature.inputs.values())
    return model


def test_frozen_graphdef_to_savedmodel_equals_the_original(tmp_path):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    w = tf.Variable(tf.random.normal([6, 3], seed=2))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def original(x):
        return tf.identity(tf.nn.softmax(tf.matmul(x, w)), name="probs")

    frozen = convert_variables_to_constants_v2(original.get_concrete_function())
    (tmp_path / "frozen.pb").write_bytes(frozen.graph.as_graph_def().SerializeToString())
    result = cli("convert", "savedmodel", "--from-graphdef", str(tmp_path / "frozen.pb"), "--inputs", "x:0",
                 "--outputs", "probs:0", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    model = assert_dynamic_batch_signature(tmp_path / "out", ["x"], ["probs"])
    np.testing.assert_allclose(model.run({"x": X})["probs"], original(X).numpy(), rtol=1e-5, atol=1e-6)


def test_tf1_meta_checkpoint_to_savedmodel_equals_the_original(tmp_path):
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        w = tf.compat.v1.get_variable("w", [6, 2], initializer=tf.compat.v1.random_normal_initializer(seed=3))
        tf.nn.tanh(tf.matmul(x, w), name="y")
        session.run(tf.compat.v1.global_variables_initializer())
        expected = session.run("y:0", {x: X})
        tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    result = cli("convert", "savedmodel", "--from-meta", str(tmp_path / "model.ckpt.meta"), "--inputs", "x:0",
                 "--outputs", "y:0", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    model = assert_dynamic_batch_signature(tmp_path / "out", ["x"], ["y"])
    np.testing.assert_allclose(model.run({"x": X})["y"], expected, rtol=1e-5, atol=1e-6)


def test_tf2_checkpoint_with_model_function_equals_the_original(tmp_path):
    from ..models import build_keras_mlp

    trained = build_keras_mlp()
    expected = trained(X).numpy()
    tf.train.Checkpoint(model=trained).write(str(tmp_path / "ckpt"))
    result = cli("convert", "savedmodel", "--from-checkpoint", str(tmp_path / "ckpt"),
                 "--model-fn", "tests.models:build_keras_mlp", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    model = assert_dynamic_batch_signature(tmp_path / "out", ["features"], ["probs"])
    np.testing.assert_allclose(model.run({"features": X})["probs"], expected, rtol=1e-5, atol=1e-6)


def test_bad_conversion_arguments_fail_with_a_message(tmp_path):
    (tmp_path / "junk.pb").write_bytes(b"\x07not a graph")
    result = cli("convert", "savedmodel", "--from-graphdef", str(tmp_path / "junk.pb"), "--inputs", "x:0",
                 "--outputs", "y:0", str(tmp_path / "out"))
    assert result.returncode != 0 and "is not a binary GraphDef" in result.stderr
    result = cli("convert", "savedmodel", "--from-graphdef", str(tmp_path / "junk.pb"), str(tmp_path / "out"))
    assert result.returncode == 2 and "--inputs and --outputs" in result.stderr


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is available here: the GPU test below runs instead")
def test_tensorrt_convert_says_what_is_missing_on_cpu(demo_repository, tmp_path):
    result = cli("convert", "tensorrt", str(demo_repository / "tabular" / "1"), str(tmp_path / "trt"))
    assert result.returncode == 2
    assert "built without TensorRT" in result.stderr and "Dockerfile.gpu" in result.stderr
    assert not (tmp_path / "trt").exists()


@pytest.mark.skipif(HAS_TENSORRT, reason="TensorRT is available here: the model would be converted")
async def test_tensorrt_in_model_yaml_falls_back_to_tensorflow_with_a_warning(demo_repository, caplog):
    config = ModelConfig.model_validate({"optimization": {"tensorrt": {"precision": "FP16"}}})
    pool = pool_for(demo_repository / "tabular" / "1", config)
    with caplog.at_level(logging.WARNING):
        await pool.start()
    try:
        assert pool.backend == "tensorflow" and pool.batch_sizes is None
        assert "serving the unconverted SavedModel (backend=tensorflow)" in caplog.text
    finally:
        await pool.close()


async def test_converted_model_sends_only_its_engine_sizes(demo_repository, tmp_path):
    """The manifest a TF-TRT conversion writes fixes the batcher's sizes (checked here on a plain copy)."""
    copy = tmp_path / "tabular_trt"
    shutil.copytree(demo_repository / "tabular" / "1", copy)
    (copy / "batchserve_trt.json").write_text(json.dumps({"precision": "FP16", "batch_sizes": [1, 4, 16]}))
    pool = pool_for(copy, ModelConfig(max_batch_size=64))
    await pool.start()
    try:
        assert pool.backend == "tensorflow-trt" and pool.batch_sizes == (1, 4, 16)
        batch = ModelConfig(max_batch_size=64).batch_config(Settings(), pool.instances, pool.batch_sizes)
        assert batch.allowed_batch_sizes == (1, 4, 16) and batch.max_batch_size == 16
    finally:
        await pool.close()


@pytest.mark.skipif(not HAS_TENSORRT, reason="needs a GPU with TensorRT (the Dockerfile.gpu image); none here")
def test_tensorrt_conversion_builds_engines_and_matches(demo_repository, tmp_path):
    result = cli("convert", "tensorrt", str(demo_repository / "tabular" / "1"), str(tmp_path / "trt"),
                 "--precision", "FP32", "--batch-sizes", "1,8")
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_model(ModelSpec(tmp_path / "trt"), "/CPU:0")
    assert model.backend == "tensorflow-trt" and model.batch_sizes == (1, 8)
    x = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    plain = TensorFlowModel(demo_repository / "tabular" / "1")
    np.testing.assert_allclose(model.run({"features": x})["score"], plain.run({"features": x})["score"], atol=1e-3)
