"""Small real SavedModels that tests build for themselves."""

from __future__ import annotations

from pathlib import Path


def save_module(path: Path, module: object, function: object) -> Path:
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures={"serving_default": function})
    return path


def build_scale_model(path: Path, factor: float) -> Path:
    """y = x * factor for x: float32 [None, 4]."""
    import tensorflow as tf

    class Scale(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):  # type: ignore[no-untyped-def]
            return {"y": x * factor}

    module = Scale()
    return save_module(path, module, module.serve)


def build_two_io_model(path: Path) -> Path:
    """Two inputs (float32 [None, 3], int32 [None]) and two outputs (total, doubled)."""
    import tensorflow as tf

    class TwoByTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.int32, name="b")])
        def serve(self, a, b):  # type: ignore[no-untyped-def]
            return {"total": tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32), "doubled": b * 2}

    module = TwoByTwo()
    return save_module(path, module, module.serve)


def build_multi_signature_model(path: Path) -> Path:
    """Three signatures over one set of variables: ``serving_default`` (x float32 [None, 4] -> y = x @ w),
    ``embed`` (ids int64 [None] -> vector float32 [None, 4], rows of w), ``length`` (text string [None] ->
    chars int32 [None])."""
    import tensorflow as tf

    class Multi(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(tf.reshape(tf.range(16, dtype=tf.float32), (4, 4)) / 10.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):  # type: ignore[no-untyped-def]
            return {"y": tf.matmul(x, self.w)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def embed(self, ids):  # type: ignore[no-untyped-def]
            return {"vector": tf.gather(self.w, ids % 4)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def length(self, text):  # type: ignore[no-untyped-def]
            return {"chars": tf.strings.length(text)}

    module = Multi()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, "embed": module.embed,
                                                       "length": module.length})
    return path


def build_keras_mlp():  # type: ignore[no-untyped-def]
    """A Keras model-building function, as ``batchserve convert savedmodel --model-fn`` expects."""
    import keras

    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="probs")(hidden)
    return keras.Model(inputs, outputs)


def build_jpeg_model(path: Path) -> Path:
    """TF Serving's image pattern: encoded JPEG bytes in (string [None]), decoded and resized in the graph;
    out the mean of each image's pixels (float32 [None]) and its decoded size (int32 [None, 2])."""
    import tensorflow as tf

    def one(image: tf.Tensor) -> tf.Tensor:
        decoded = tf.io.decode_jpeg(image, channels=3)
        return tf.concat([tf.reshape(tf.reduce_mean(tf.cast(decoded, tf.float32)), [1]),
                          tf.cast(tf.shape(decoded)[:2], tf.float32)], axis=0)

    class Jpeg(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):  # type: ignore[no-untyped-def]
            stats = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([3], tf.float32))
            return {"mean": stats[:, 0], "size": tf.cast(stats[:, 1:], tf.int32)}

    module = Jpeg()
    return save_module(path, module, module.serve)
