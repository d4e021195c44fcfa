"""``batchserve gpu-check``: versions, and a tiny convert → build → infer round trip on the GPU."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def gpu_check(_: argparse.Namespace) -> int:
    import numpy as np
    import tensorflow as tf

    from server.runtime import ModelSpec, convert_tensorrt, load_model, tensorrt_status

    build = tf.sysconfig.get_build_info()
    status = tensorrt_status()
    print(f"TensorFlow {tf.__version__}; CUDA {build.get('cuda_version', 'none')}; "
          f"cuDNN {build.get('cudnn_version', 'none')}")
    print(f"TensorRT linked {status.linked or 'no'}, loaded {status.loaded or 'no'}; GPUs: "
          f"{', '.join(status.gpus) or 'none'}")
    if not status.available:
        print(f"FAIL: {status.reason}", file=sys.stderr)
        return 1

    class Tiny(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.random.normal([16, 4], seed=1))

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32, name="x")])
        def serve(self, x: Any) -> dict[str, Any]:
            return {"y": tf.nn.relu(tf.matmul(x, self.w))}

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "tiny", Path(tmp) / "tiny_trt"
        tiny = Tiny()
        tf.saved_model.save(tiny, str(source), signatures={"serving_default": tiny.serve})
        convert_tensorrt(source, target, "FP16", [1, 8], progress=False)
        model = load_model(ModelSpec(Path(target)), "/CPU:0")
        x = np.random.default_rng(0).random((8, 16), dtype=np.float32)
        got = model.run({"x": x})["y"]
        want = tiny.serve(tf.constant(x))["y"].numpy()
        error = float(np.max(np.abs(got - want)))
    ok = error < 5e-2
    print(f"{'OK' if ok else 'FAIL'}: TF-TRT FP16 round trip on {status.gpus[0]} (backend {model.backend}, "
          f"max abs error {error:.2e})")
    return 0 if ok else 1


def add_gpu_check_command(commands: Any) -> None:
    parser = commands.add_parser("gpu-check", help="print TF/CUDA/TensorRT versions and run a TF-TRT round trip")
    parser.set_defaults(run=gpu_check)
