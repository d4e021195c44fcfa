"""Mixed models and protocols at once: each model's batcher must stay independent."""

from load_tests.locust_common import install_thresholds, user

ImageBinary = user("image_classifier", "v2_binary", weight=2)
ImageRows = user("image_classifier", "tfserving_json", weight=1)
TabularBinary = user("tabular", "v2_binary", weight=4)
TabularJson = user("tabular", "v2_json", weight=2)
SpamJson = user("spam", "v2_json", weight=2)
SpamRows = user("spam", "tfserving_json", weight=2, rows=4)

install_thresholds(fail_ratio=0.0, p95_ms=1000, p99_ms=2000)
