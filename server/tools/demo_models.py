"""Build the demo SavedModels in TF Serving layout, without downloading anything.

spam             raw strings in, vectorization inside the SavedModel; trained here on a generated corpus
image_classifier MobileNetV2, 96x96x3 float32, 10 classes, random weights: the compute-bound model
image_uint8      the same network on uint8 pixels (27 KB a request instead of 110 KB): the model casts
image_jpeg       the same network on JPEG bytes (a few KB a request): decoded and resized in the graph
tabular          a small dense network on 32 float32 features: the overhead-bound model
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from server.tools.convert.savedmodel import export_keras

log = logging.getLogger(__name__)

_SPAM_PHRASES = [
    "win a free {prize} now", "claim your {prize} today", "you have been selected for a {prize}",
    "limited offer on {product}", "cheap {product} no prescription", "click here to unlock your {prize}",
    "urgent your account needs verification", "earn {money} from home", "congratulations you won {money}",
    "act now exclusive deal on {product}", "risk free investment returns {money}", "lowest price {product} guaranteed",
]
_HAM_PHRASES = [
    "are we still meeting at {time}", "can you send me the {doc} before {time}", "thanks for the {doc} yesterday",
    "lunch at {time} with the team", "the {doc} is ready for review", "please check the {doc} when you can",
    "see you at the {place} around {time}", "happy birthday hope you have a great day",
    "running late be there by {time}",
    "did you book the {place} for friday", "notes from the {doc} meeting attached", "call me when you land",
]
_FILL = {
    "prize": ["iphone", "gift card", "cruise", "vacation", "voucher", "laptop"],
    "product": ["watches", "pills", "software", "loans", "insurance", "sunglasses"],
    "money": ["$500 a day", "1000 dollars", "cash prizes", "$$$", "big money"],
    "time": ["noon", "3pm", "tomorrow morning", "9:30", "six"],
    "doc": ["report", "slides", "budget", "contract", "agenda", "invoice"],
    "place": ["office", "cafe", "station", "gym", "restaurant"],
}
_NOISE = ["hey", "hi", "ok", "please", "now", "today", "really", "just", "so", "btw", "free", "deal", "team", "meeting"]


def spam_corpus(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """Labelled messages from templates, with shared noise words so the task is not trivial."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.random() < 0.4
        template = rng.choice(_SPAM_PHRASES if label else _HAM_PHRASES)
        text = template.format(**{k: rng.choice(v) for k, v in _FILL.items()})
        words = text.split()
        for _ in range(rng.randint(0, 3)):
            words.insert(rng.randint(0, len(words)), rng.choice(_NOISE))
        if rng.random() < 0.05:  # label noise: real data is never clean
            label = not label
        texts.append(" ".join(words))
        labels.append(int(label))
    return texts, labels


def build_spam(path: Path, seed: int = 0) -> dict[str, float]:
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    texts, labels = spam_corpus(3000, seed)
    split = 2400
    vectorize = keras.layers.TextVectorization(max_tokens=4000, output_mode="multi_hot", ngrams=2)
    vectorize.adapt(tf.constant(texts[:split]))
    classifier = keras.Sequential([keras.Input((vectorize.vocabulary_size(),)), keras.layers.Dense(1, "sigmoid")])
    classifier.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    x = vectorize(tf.constant(texts)).numpy()
    y = np.array(labels, dtype=np.float32)
    classifier.fit(x[:split], y[:split], epochs=8, batch_size=64, verbose=0)
    predicted = classifier.predict(x[split:], verbose=0)[:, 0] > 0.5
    truth = y[split:] > 0.5
    tp = float(np.sum(predicted & truth))
    metrics = {
        "precision": tp / max(1.0, float(np.sum(predicted))),
        "recall": tp / max(1.0, float(np.sum(truth))),
        "accuracy": float(np.mean(predicted == truth)),
        "held_out": float(len(truth)),
    }

    class SpamModel(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.vectorize = vectorize
            self.classifier = classifier

        def call(self, text: Any) -> Any:
            return self.classifier(self.vectorize(text))

    model = SpamModel()
    model(tf.constant(["build the model once before export"]))

    def serve(text: Any) -> dict[str, Any]:
        probability = model(text)[:, 0]
        label = tf.where(probability > 0.5, tf.constant("spam"), tf.constant("ham"))
        return {"spam_probability": probability, "label": label}

    export_keras(path, model, serve, [tf.TensorSpec([None], tf.string, name="text")])
    return metrics


def _mobilenet(seed: int) -> Any:
    """The image models' network (the same weights for the same seed): 96x96x3 pixels in [0, 1], 10 classes."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)


def build_image_classifier(path: Path, seed: int = 0) -> None:
    import tensorflow as tf

    model = _mobilenet(seed)

    def serve(image: Any) -> dict[str, Any]:
        return {"probabilities": model(image, training=False)}

    export_keras(path, model, serve, [tf.TensorSpec([None, 96, 96, 3], tf.float32, name="image")])


def build_image_uint8(path: Path, seed: int = 0) -> None:
    """image_classifier's network on uint8 pixels: what a camera gives, a quarter of float32's bytes."""
    import tensorflow as tf

    model = _mobilenet(seed)

    def serve(image: Any) -> dict[str, Any]:
        return {"probabilities": model(tf.cast(image, tf.float32) / 255.0, training=False)}

    export_keras(path, model, serve, [tf.TensorSpec([None, 96, 96, 3], tf.uint8, name="image")])


def build_image_jpeg(path: Path, seed: int = 0) -> None:
    """image_classifier's network on encoded JPEG images of any size, each decoded (3 channels) and resized to
    96x96 in the graph; with TF Serving's warm-up records (assets.extra) holding one real JPEG, since the
    generated warm-up inputs (empty strings) are no JPEG."""
    import tensorflow as tf

    from server.tools.warmup_writer import write_warmup_records

    model = _mobilenet(seed)

    def decode(data: Any) -> Any:
        return tf.image.resize(tf.io.decode_jpeg(data, channels=3), [96, 96]) / 255.0

    def serve(image_bytes: Any) -> dict[str, Any]:
        pixels = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([96, 96, 3], tf.float32))
        return {"probabilities": model(pixels, training=False)}

    export_keras(path, model, serve, [tf.TensorSpec([None], tf.string, name="image_bytes")])
    jpeg = tf.io.encode_jpeg(tf.constant(example_photo(), tf.uint8), quality=85).numpy()
    write_warmup_records(path, [{"image_bytes": np.array([jpeg], dtype=object)}], model="image_jpeg")


def example_photo(size: int = 128, seed: int = 0) -> np.ndarray:
    """A ``size`` x ``size`` RGB uint8 image with a photo's smooth gradients and grain: its JPEG is a few KB
    (random pixels would take 10x more)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    smooth = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y - 3 * x), np.sin(4 * (x + y))], axis=-1) * 0.5 + 0.5
    return (np.clip(smooth + rng.normal(0.0, 0.06, smooth.shape), 0.0, 1.0) * 255).astype(np.uint8)


def build_tabular(path: Path, seed: int = 0) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ])

    def serve(features: Any) -> dict[str, Any]:
        return {"score": model(features, training=False)}

    export_keras(path, model, serve, [tf.TensorSpec([None, 32], tf.float32, name="features")])


_MODEL_YAML = {
    "spam": "max_batch_size: 64\nmax_queue_delay_ms: 2\nslo_ms: 50\n",
    "image_classifier": "max_batch_size: 32\nmax_queue_delay_ms: 5\nslo_ms: 250\n",
    "image_uint8": "max_batch_size: 32\nmax_queue_delay_ms: 5\nslo_ms: 250\n",
    "image_jpeg": "max_batch_size: 32\nmax_queue_delay_ms: 5\nslo_ms: 250\n",
    "tabular": "max_batch_size: 128\nmax_queue_delay_ms: 1\nslo_ms: 25\n",
}
MODELS = tuple(_MODEL_YAML)


def build_demo_models(root: str | Path, names: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Build each demo model as ROOT/NAME/1 (skipped when present unless force); returns spam's metrics."""
    root = Path(root)
    builders: dict[str, Callable[[Path], Any]] = {
        "spam": build_spam, "image_classifier": build_image_classifier, "image_uint8": build_image_uint8,
        "image_jpeg": build_image_jpeg, "tabular": build_tabular,
    }
    report: dict[str, Any] = {}
    for name in names or list(builders):
        version_dir = root / name / "1"
        if (version_dir / "saved_model.pb").exists() and not force:
            log.info("%s: already built at %s", name, version_dir)
            continue
        version_dir.parent.mkdir(parents=True, exist_ok=True)
        result = builders[name](version_dir)
        (root / name / "model.yaml").write_text(_MODEL_YAML[name])
        if result:
            report[name] = result
        log.info("%s: built at %s", name, version_dir)
    return report
