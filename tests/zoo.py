"""The model zoo: small real SavedModels exported the ways users export them, built at test time (issue 24).

Each model is a kind that real deployments serve:

- ``keras_export``: Keras 3 ``model.export()`` of a functional model with three inputs (float32 features, a
  string colour looked up by a ``StringLookup`` layer, an int64 count) and a dict of outputs, rank-1 ones among them;
- ``uint8_image``: ``tf.Module`` with a ``tf.function`` signature over uint8 images [-1, 16, 16, 3];
- ``jpeg_image``: encoded JPEG bytes decoded in the graph (the usual TF Serving image pattern), a PNG thumbnail out
  (binary strings both ways);
- ``multi_signature``: several signatures in one SavedModel (``serving_default`` and ``embed``);
- ``tokens``: variable-length int32 token ids [-1, -1], batched across lengths with ``pad_inputs``;
- ``lookup``: hash-table lookups (a vocabulary file asset and a key-value table), string and int64 in, int64 and
  string out.

``build_zoo(root)`` writes them in TF Serving layout with a ``model.yaml`` each; ``ZOO[name].requests(signature)``
gives the three requests (1, 2 and 3 rows, ``BATCH`` in all) a test sends at once. Every answer is compared with
the same SavedModel called in-process (tests/reference.py): exactly, except the outputs a model lists in
``approximate``, whose float sums run in a different order when the rows are computed in a batch of another size.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

BATCH = 6
"""Rows a test sends at once (three requests: 1, 2 and 3 rows), and every zoo model's ``max_batch_size``."""

MODEL_YAML = {"max_batch_size": BATCH, "max_queue_delay_ms": 5000, "dispatch_when_idle": False}
"""A batch waits for all the rows of a test's three requests and leaves the moment it is full, so each test's
requests are answered from one batch whatever the machine's speed (they never wait the delay out)."""

Inputs = dict[str, np.ndarray]

_MATMUL = ("a Dense layer's matrix product (oneDNN) may sum in another order for a batch of another size, "
           "so float results can differ in the last bits (observed)")
_PADDED = ("the batch pads the tokens to the longest request's length, so the float sum over a row runs over more "
           "(zero) terms, grouped differently: the last bits differ (observed)")


@dataclass(frozen=True)
class ZooModel:
    """One zoo model: how to build it, and the requests a test sends to each of its signatures."""

    name: str
    build: Callable[[Path], None]
    make_requests: Callable[[np.random.Generator, str], list[Inputs]]
    signatures: tuple[str, ...] = ("serving_default",)
    approximate: Mapping[str, str] = field(default_factory=dict)
    """Outputs compared with a float tolerance, and why the batched answer may differ in the last bits."""
    config: Mapping[str, Any] = field(default_factory=dict)
    """model.yaml keys besides ``MODEL_YAML``."""

    def requests(self, signature: str = "serving_default") -> list[Inputs]:
        """Three requests (1, 2 and 3 rows) for ``signature``: the same ones on every call."""
        return self.make_requests(np.random.default_rng(sum(map(ord, self.name + signature))), signature)


def _rows(rng: np.random.Generator, make: Callable[[np.random.Generator, int], Inputs]) -> list[Inputs]:
    return [make(rng, rows) for rows in (1, 2, 3)]


def _save(path: Path, module: Any, **signatures: Any) -> None:
    import tensorflow as tf

    tf.saved_model.save(module, str(path), signatures=signatures)


# ---- keras_export: Keras 3 model.export(), three inputs, a StringLookup --------------------------------------

COLORS = ["red", "green", "blue"]


def build_keras_export(path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features", dtype="float32")
    color = keras.Input((), name="color", dtype="string")
    count = keras.Input((), name="count", dtype="int64")
    color_id = keras.layers.StringLookup(vocabulary=COLORS, name="color_id")(color)
    embedded = keras.layers.Embedding(len(COLORS) + 1, 3)(color_id)
    scaled = keras.layers.Lambda(lambda t: keras.ops.expand_dims(keras.ops.cast(t, "float32") / 10.0, -1))(count)
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([features, embedded, scaled]))
    probs = keras.layers.Dense(3, activation="softmax")(hidden)
    score = keras.layers.Lambda(lambda t: keras.ops.squeeze(t, -1))(keras.layers.Dense(1)(hidden))
    model = keras.Model({"features": features, "color": color, "count": count},
                        {"probs": probs, "score": score, "color_id": color_id})
    model.export(str(path), verbose=False)


def _keras_inputs(rng: np.random.Generator, signature: str) -> list[Inputs]:
    words = np.array([c.encode() for c in COLORS] + [b"purple", "vert \u00e9meraude".encode()], dtype=object)
    return _rows(rng, lambda rng, rows: {
        "features": rng.standard_normal((rows, 4)).astype(np.float32),
        "color": rng.choice(words, rows),
        "count": rng.integers(0, 1000, rows, dtype=np.int64)})


# ---- uint8_image: tf.Module over uint8 images ----------------------------------------------------------------

def build_uint8_image(path: Path) -> None:
    import tensorflow as tf

    class Images(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.uint8, name="image")])
        def serve(self, image: Any) -> dict[str, Any]:
            return {"total": tf.reduce_sum(tf.cast(image, tf.int32), axis=[1, 2, 3]),
                    "brightest": tf.reduce_max(image, axis=[1, 2, 3]),
                    "mean": tf.reduce_mean(tf.cast(image, tf.float32) / 255.0, axis=[1, 2, 3])}

    module = Images()
    _save(path, module, serving_default=module.serve)


def _image_inputs(rng: np.random.Generator, signature: str) -> list[Inputs]:
    return _rows(rng, lambda rng, rows: {"image": rng.integers(0, 256, (rows, 16, 16, 3), dtype=np.uint8)})


# ---- jpeg_image: encoded JPEG bytes decoded in the graph -----------------------------------------------------

def build_jpeg_image(path: Path) -> None:
    import tensorflow as tf

    class Jpeg(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes: Any) -> dict[str, Any]:
            def one(data: Any) -> Any:
                image = tf.io.decode_jpeg(data, channels=3)
                size = tf.shape(image)[:2]
                small = tf.image.resize(image, [4, 4], method="nearest")
                return size[0], size[1], tf.reduce_max(small), tf.io.encode_png(small)

            height, width, peak, thumbnail = tf.map_fn(
                one, image_bytes, fn_output_signature=(tf.int32, tf.int32, tf.uint8, tf.string))
            return {"height": height, "width": width, "peak": peak, "thumbnail_bytes": thumbnail}

    module = Jpeg()
    _save(path, module, serving_default=module.serve)


def jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
    """A JPEG of random pixels, ``height`` x ``width``."""
    import tensorflow as tf

    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return bytes(tf.io.encode_jpeg(pixels).numpy())


def _jpeg_inputs(rng: np.random.Generator, signature: str) -> list[Inputs]:
    def make(rng: np.random.Generator, rows: int) -> Inputs:
        images = np.empty(rows, dtype=object)
        images[:] = [jpeg(rng, int(rng.integers(4, 20)), int(rng.integers(4, 20))) for _ in range(rows)]
        return {"image_bytes": images}

    return _rows(rng, make)


# ---- multi_signature: serving_default and embed in one SavedModel --------------------------------------------

def build_multi_signature(path: Path) -> None:
    import tensorflow as tf

    class Multi(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = tf.Variable(np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def predict(self, x: Any) -> dict[str, Any]:
            return {"doubled": x * 2.0, "largest": tf.argmax(x, axis=1)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def embed(self, ids: Any) -> dict[str, Any]:
            return {"embedding": tf.gather(self.table, ids), "known": ids < 10}

    module = Multi()
    _save(path, module, serving_default=module.predict, embed=module.embed)


def _multi_inputs(rng: np.random.Generator, signature: str) -> list[Inputs]:
    if signature == "embed":
        return _rows(rng, lambda rng, rows: {"ids": rng.integers(0, 10, rows, dtype=np.int64)})
    return _rows(rng, lambda rng, rows: {"x": rng.standard_normal((rows, 4)).astype(np.float32)})


# ---- tokens: variable-length int32, padded with 0 to batch requests of different lengths ---------------------

def build_tokens(path: Path) -> None:
    import tensorflow as tf

    class Tokens(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = tf.Variable(np.random.default_rng(2).standard_normal((50, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="tokens")])
        def serve(self, tokens: Any) -> dict[str, Any]:
            mask = tf.cast(tokens != 0, tf.int32)  # 0 pads
            length = tf.reduce_sum(mask, axis=1)
            checksum = tf.reduce_sum(tokens * tf.range(1, tf.shape(tokens)[1] + 1), axis=1)
            vectors = tf.gather(self.embedding, tokens) * tf.cast(mask, tf.float32)[:, :, None]
            pooled = tf.reduce_sum(vectors, axis=[1, 2]) / tf.cast(tf.maximum(length, 1), tf.float32)
            return {"length": length, "checksum": checksum, "pooled": pooled}

    module = Tokens()
    _save(path, module, serving_default=module.serve)


def _token_inputs(rng: np.random.Generator, signature: str) -> list[Inputs]:
    return [{"tokens": rng.integers(1, 50, (rows, length), dtype=np.int32)} for rows, length in ((1, 7), (2, 3),
                                                                                               (3, 5))]


# ---- lookup: a vocabulary file (an asset) and a key-value hash table ------------------------------------------

VOCABULARY = ["the", "cat", "sat", "on", "mat", "caf\u00e9"]
NAMES = {1: "one", 2: "two", 3: "three", 40: "forty"}


def build_lookup(path: Path) -> None:
    import tensorflow as tf

    folder = tempfile.TemporaryDirectory()  # the file is copied into the SavedModel's assets/, then removed
    vocabulary = Path(folder.name) / "vocabulary.txt"
    vocabulary.write_text("\n".join(VOCABULARY) + "\n", encoding="utf-8")

    class Lookup(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            initializer = tf.lookup.TextFileInitializer(
                str(vocabulary), tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                tf.lookup.TextFileIndex.LINE_NUMBER)
            self.words = tf.lookup.StaticVocabularyTable(initializer, num_oov_buckets=2)
            self.names = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(NAMES), tf.int64), tf.constant(list(NAMES.values()))), default_value="unknown")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="word"),
                                      tf.TensorSpec([None], tf.int64, name="number")])
        def serve(self, word: Any, number: Any) -> dict[str, Any]:
            return {"word_id": self.words.lookup(word), "name": self.names.lookup(number)}

    module = Lookup()
    _save(path, module, serving_default=module.serve)
    folder.cleanup()


def _lookup_inputs(rng: np.random.Generator, signature: str) -> list[Inputs]:
    words = np.array([w.encode() for w in [*VOCABULARY, "dog", ""]], dtype=object)
    numbers = np.array([*NAMES, 0, -5, 2**40], dtype=np.int64)
    return _rows(rng, lambda rng, rows: {"word": rng.choice(words, rows), "number": rng.choice(numbers, rows)})


# ---- the zoo -------------------------------------------------------------------------------------------------

ZOO: dict[str, ZooModel] = {m.name: m for m in [
    ZooModel("keras_export", build_keras_export, _keras_inputs, approximate={"probs": _MATMUL, "score": _MATMUL}),
    ZooModel("uint8_image", build_uint8_image, _image_inputs),
    ZooModel("jpeg_image", build_jpeg_image, _jpeg_inputs),
    ZooModel("multi_signature", build_multi_signature, _multi_inputs, signatures=("serving_default", "embed")),
    ZooModel("tokens", build_tokens, _token_inputs, approximate={"pooled": _PADDED}, config={"pad_inputs": {"tokens": 0}}),
    ZooModel("lookup", build_lookup, _lookup_inputs),
]}


def build_zoo(root: Path) -> Path:
    """Every zoo model as version 1 under ``root``, each with its model.yaml."""
    for model in ZOO.values():
        model.build(root / model.name / "1")
        (root / model.name / "model.yaml").write_text(yaml.safe_dump({**MODEL_YAML, **model.config}))
    return root
